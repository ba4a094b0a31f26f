"""Sweep executors: the same CartPole sweep with the local executor and on namespaced Ray
clusters (tests/ray_cluster.py; root only), in one run.

    python scripts/bench.py sweep [--trials 12] [--episodes 2000]

Settings, each a fresh ``pgrl sweep`` process of ``--trials`` trials (learning rates x seeds of
``configs/cartpole.toml``, each trial until solved or ``--episodes``):

- ``local``: ``--executor local``, a process per core. The baseline.
- ``ray-1node``: a one-node Ray cluster with this machine's CPUs; the time includes starting the
  cluster (``ray start``), and is also given without it.
- ``ray-2nodes``: two nodes of one CPU each (the same cores, split), against
- ``ray-1node-1cpu``: one node of one CPU: trials per minute scale with the nodes.

Per setting: wall seconds, trials per minute, and the scheduler's overhead per trial: wall time
x CPUs / trials - the mean seconds a trial spent training (from its summary.json).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))


def _sweep_args(out: Path, trials: int, episodes: int) -> list[str]:
    seeds = [str(s) for s in range(trials // 3)]
    return [
        *("-m", "pgrl.cli", "sweep", str(ROOT / "configs" / "cartpole.toml")),
        *("--grid", "optimizer.learning_rate=5e-3,1e-2,2e-2", "--seeds", *seeds),
        *("--set", f"train.episodes={episodes}", "--out", str(out)),
    ]


def _result(out: Path, wall: float, cpus: int, setup: float = 0.0) -> dict:
    with open(out / "trials.csv") as f:
        rows = list(csv.DictReader(f))
    bad = [r["trial"] for r in rows if r["status"] != "ok"]
    if bad:
        raise SystemExit(f"trials failed: {bad}")
    train = [json.loads((out / r["trial"] / "summary.json").read_text())["wall_time"] for r in rows]
    mean_train = sum(train) / len(train)
    return {
        "wall": wall + setup,
        "sweep": wall,
        "setup": setup,
        "per_min": 60 * len(rows) / wall,
        "overhead": wall * cpus / len(rows) - mean_train,
        "mean_train": mean_train,
        "nodes": sorted({r["node"] for r in rows}),
    }


def run_local(tmp: Path, trials: int, episodes: int) -> dict:
    out = tmp / "local"
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, *_sweep_args(out, trials, episodes)],
        check=True,
        capture_output=True,
        cwd=tmp,
    )
    return _result(out, time.perf_counter() - t0, os.cpu_count() or 1)


def run_ray(tmp: Path, name: str, nodes: int, cpus: int, trials: int, episodes: int) -> dict:
    from ray_cluster import RayCluster

    out = tmp / name
    t0 = time.perf_counter()
    with RayCluster(nodes=nodes, cpus_per_node=cpus, prefix="pgrlbench") as cluster:
        setup = time.perf_counter() - t0
        t1 = time.perf_counter()
        cmd = [sys.executable, *_sweep_args(out, trials, episodes), "--executor", "ray"]
        done = cluster.run_in_head(cmd, capture_output=True, text=True, cwd=tmp)
        wall = time.perf_counter() - t1
        if done.returncode != 0:
            raise SystemExit(done.stderr[-2000:])
        return _result(out, wall, nodes * cpus, setup)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="bench.py sweep")
    parser.add_argument("--trials", type=int, default=12, help="a multiple of 3")
    parser.add_argument("--episodes", type=int, default=2000)
    args = parser.parse_args(argv)
    from ray_cluster import skip_reason

    if reason := skip_reason("pgrlbench"):
        raise SystemExit(f"bench.py sweep: {reason}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        results = {"local": run_local(tmp, args.trials, args.episodes)}
        cpus = os.cpu_count() or 1
        for name, nodes, per_node in (
            ("ray-1node", 1, cpus),
            ("ray-2nodes", 2, 1),
            ("ray-1node-1cpu", 1, 1),
        ):
            results[name] = run_ray(tmp, name, nodes, per_node, args.trials, args.episodes)
    base = results["local"]["wall"]
    print(f"{args.trials}-trial CartPole sweep, {time.strftime('%Y-%m-%d')}, {cpus} CPUs")
    print("| setting | wall s (setup s) | x local | trials/min | overhead s/trial | nodes |")
    print("|---|---|---|---|---|---|")
    for name, r in results.items():
        print(
            f"| {name} | {r['wall']:.1f} ({r['setup']:.1f}) | {r['wall'] / base:.2f} | "
            f"{r['per_min']:.1f} | {r['overhead']:.2f} | {' '.join(r['nodes'])} |"
        )
    two, one = results["ray-2nodes"], results["ray-1node-1cpu"]
    print(
        f"2 nodes / 1 node (1 CPU each), trials per minute: {two['per_min'] / one['per_min']:.2f}"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
