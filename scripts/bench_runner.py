"""Pong's rollout workers: worker processes and Ray actors against the local runner, same games,
in one run; and the scaling model those measurements give (namespaced Ray clusters from
tests/ray_cluster.py; root only).

    python scripts/bench.py runner [--episodes 40] [--batch 10]

Settings, each a fresh ``pgrl train configs/pong.toml`` process playing the same ``--episodes``
games (2 env slots, so every setting plays exactly the same games; the script checks it):

- ``local-2envs``: ``env.num_envs = 2`` on this machine. The baseline.
- ``processes-2``: ``env.runner = "processes"``, 2 worker processes x 1 env.
- ``ray-2nodes``: ``env.runner = "ray"``, 2 workers x 1 env on two nodes of one CPU each.
- ``ray-1node``: the same 2 workers on one node with both CPUs.

Figures per setting, from ``updates.csv`` without the first update (the first game of a worker
loads the ROM and warms its caches): recorded env steps per second of training, updates
included, and its ratio to ``local-2envs``; the mean seconds per update of rollout (slowest
worker), gradient (slowest worker's gradient of its games), update (the learner: adding the
slots' gradients, the RMSprop step), broadcast (weights out) and transfer (the rest of the
waits: scheduling, the gradients' and the games' rows' way back).

The scaling model (printed after the table) predicts a synchronous update with ``N`` workers of
one env each and a batch of ``B`` games of ``L`` steps, the workers computing their games'
gradients:

    T(N) = ceil(B / N) * L * (c_roll + c_grad) + t_step + N * t_add + t_fixed + 2 * N * W / bw

from ``c_roll`` and ``c_grad`` (a worker's seconds per step of playing, policy included, and of
its gradient), ``t_add`` (the learner's seconds to add one slot's gradient, timed here on arrays
of the weights' size), ``t_step`` (the rest of the learner's update: the RMSprop step) and
``t_fixed`` (broadcast + transfer per update) measured on the ``ray-2nodes`` setting; ``W`` the
weights' bytes (the weights go out and one gradient per worker comes back) and ``bw`` the
network bandwidth at the learner (``--bandwidth``, default 1.25e9 B/s, 10 Gbit/s), all stated.
Efficiency is ``B * L * (c_roll + c_grad) / N`` (every worker busy, nothing else) over ``T(N)``.
"""

from __future__ import annotations

import argparse
import csv
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

PONG = str(ROOT / "configs" / "pong.toml")
STEP_BYTES = 267  # a sparse int8 Pong step in pgrl's batches (see docs/results.md)
# Games to a running return of -19 with configs/pong.toml (docs/results.md: 3,472 games, 4.3M steps)
GAMES_TO_MINUS_19, STEPS_PER_GAME = 3472, 4.3e6 / 3472


def _train_cmd(out: Path, episodes: int, batch: int, sets: list[str]) -> list[str]:
    overrides = [
        f"train.episodes={episodes}",
        f"train.batch_episodes={batch}",
        "log.progress=false",
    ]
    args = [a for s in [*overrides, *sets] for a in ("--set", s)]
    return [sys.executable, "-m", "pgrl.cli", "train", PONG, *args, "--out", str(out)]


def _measure(out: Path) -> dict:
    """Means per update, the first one left out (the workers' first game warms up: ROM, caches)."""
    with open(out / "updates.csv") as f:
        rows = list(csv.DictReader(f))[1:]
    mean = {k: sum(float(r[f"{k}_seconds"]) for r in rows) / len(rows) for k in _PARTS}
    steps = sum(int(r["batch_steps"]) for r in rows)
    seconds = sum(float(r[f"{k}_seconds"]) for r in rows for k in _PARTS)
    return {"sps": steps / seconds, "steps": steps, "updates": len(rows), **mean}


_PARTS = ("rollout", "gradient", "update", "broadcast", "transfer")


def run_local(tmp: Path, episodes: int, batch: int) -> dict:
    out = tmp / "local"
    cmd = _train_cmd(out, episodes, batch, ["env.num_envs=2"])
    subprocess.run(cmd, check=True, capture_output=True)
    return {**_measure(out), "out": out}


def run_processes(tmp: Path, episodes: int, batch: int) -> dict:
    out = tmp / "processes"
    cmd = _train_cmd(out, episodes, batch, ["env.runner=processes", "env.num_workers=2"])
    subprocess.run(cmd, check=True, capture_output=True)
    return {**_measure(out), "out": out}


def run_ray(tmp: Path, name: str, nodes: int, cpus: int, episodes: int, batch: int) -> dict:
    from ray_cluster import RayCluster

    out = tmp / name
    sets = ["env.runner=ray", "env.num_workers=2", "env.envs_per_worker=1"]
    with RayCluster(nodes=nodes, cpus_per_node=cpus, prefix="pgrlbench") as cluster:
        done = cluster.run_in_head(
            _train_cmd(out, episodes, batch, sets), capture_output=True, text=True
        )
    if done.returncode != 0:
        raise SystemExit(done.stderr[-2000:])
    return {**_measure(out), "out": out}


def _same_games(a: Path, b: Path) -> bool:
    def games(p):
        with open(p / "metrics.csv") as f:
            return [(r["return"], r["length"]) for r in csv.DictReader(f)]

    return games(a) == games(b)


def add_seconds(weight_bytes: int) -> float:
    """Seconds to add one gradient of ``weight_bytes`` float64 bytes to a running sum."""
    total, part = np.zeros(weight_bytes // 8), np.ones(weight_bytes // 8)
    t0, n = time.perf_counter(), 20
    for _ in range(n):
        total += part
    return (time.perf_counter() - t0) / n


def model(m: dict, workers: int, batch: int, weight_bytes: int, bw: float, t_add: float) -> dict:
    """Predicted seconds per update, steps/s and minutes to -19 (see the module docstring)."""
    per_worker = m["steps"] / m["updates"] / 2  # 2 workers share a batch
    c_roll, c_grad = m["rollout"] / per_worker, m["gradient"] / per_worker
    t_step = max(m["update"] - 2 * t_add, 0.0)
    t_fixed = m["broadcast"] + m["transfer"]
    steps = batch * STEPS_PER_GAME
    t_work = math.ceil(batch / workers) * STEPS_PER_GAME * (c_roll + c_grad)
    t_net = 2 * workers * weight_bytes / bw
    t = t_work + t_step + min(workers, batch) * t_add + t_fixed + t_net
    ideal = steps * (c_roll + c_grad) / workers  # all workers busy, nothing else
    return {
        "t": t,
        "sps": steps / t,
        "efficiency": ideal / t,
        "minutes": GAMES_TO_MINUS_19 / batch * t / 60,
        "c_roll": c_roll,
        "c_grad": c_grad,
        "t_step": t_step,
        "t_fixed": t_fixed,
    }


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="bench.py runner")
    parser.add_argument("--episodes", type=int, default=40, help="games per setting")
    parser.add_argument("--batch", type=int, default=10, help="train.batch_episodes")
    parser.add_argument("--bandwidth", type=float, default=1.25e9, help="bytes/s, for the model")
    args = parser.parse_args(argv)
    from ray_cluster import skip_reason

    if reason := skip_reason("pgrlbench"):
        raise SystemExit(f"bench.py runner: {reason}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        results = {"local-2envs": run_local(tmp, args.episodes, args.batch)}
        results["processes-2"] = run_processes(tmp, args.episodes, args.batch)
        results["ray-2nodes"] = run_ray(tmp, "ray-2nodes", 2, 1, args.episodes, args.batch)
        results["ray-1node"] = run_ray(tmp, "ray-1node", 1, 2, args.episodes, args.batch)
        same = all(_same_games(results["local-2envs"]["out"], r["out"]) for r in results.values())
    base = results["local-2envs"]["sps"]
    print(
        f"Pong ({args.episodes} games, batches of {args.batch}), {time.strftime('%Y-%m-%d')}; "
        f"every setting played the same games: {same}"
    )
    print(
        "| setting | steps/s | x local | rollout s | gradient s | update s | broadcast ms "
        "| transfer ms |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        print(
            f"| {name} | {r['sps']:,.0f} | {r['sps'] / base:.2f} | {r['rollout']:.2f} | "
            f"{r['gradient']:.3f} | {r['update']:.3f} | {1e3 * r['broadcast']:.1f} | "
            f"{1e3 * r['transfer']:.1f} |"
        )
    weight_bytes = 6400 * 200 * 8 + 200 * 8  # configs/pong.toml: float64, no biases
    t_add = add_seconds(weight_bytes)
    m = results["ray-2nodes"]
    c = model(m, 2, args.batch, weight_bytes, args.bandwidth, t_add)
    print(
        f"\nScaling model from ray-2nodes: c_roll {1e6 * c['c_roll']:.0f} us/step and c_grad "
        f"{1e6 * c['c_grad']:.1f} us/step per worker, t_add {1e3 * t_add:.2f} ms per slot and "
        f"t_step {1e3 * c['t_step']:.0f} ms on the learner, fixed {1e3 * c['t_fixed']:.0f} "
        f"ms/update; {STEPS_PER_GAME:,.0f} steps/game, {GAMES_TO_MINUS_19:,} games to -19 "
        f"(configs/pong.toml, batches of 10), bandwidth {args.bandwidth / 1e9:.2f} GB/s"
    )
    print("| workers | batch (games) | s/update | steps/s | efficiency | minutes to -19 |")
    print("|---|---|---|---|---|---|")
    for workers in (8, 32, 128):
        for batch in sorted({10, workers, 4 * workers}):
            p = model(m, workers, batch, weight_bytes, args.bandwidth, t_add)
            print(
                f"| {workers} | {batch} | {p['t']:.2f} | {p['sps']:,.0f} | "
                f"{100 * p['efficiency']:.0f}% | {p['minutes']:.1f} |"
            )


if __name__ == "__main__":
    main(sys.argv[1:])
