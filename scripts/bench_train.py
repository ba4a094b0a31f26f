"""Training throughput: whole training runs (updates included), against the raw env, and
optionally against another checkout of pgrl, in one run.

    python scripts/bench.py train [--seconds 90] [--rounds 2] [--baseline PATH] [--only NAME ...]

Settings (``--only`` picks some):

- ``pong-numpy-1``, ``pong-numpy-2``, ``pong-tf-1``, ``pong-tf-2``: ``configs/pong.toml``
  (Karpathy's hyperparameters, float64) for ``--seconds`` of wall clock with 1 or 2 envs;
  ``pong-numpy-proc1``, ``pong-numpy-proc2``, ``pong-tf-proc2``: the same with
  ``env.runner = "processes"`` and 1 or 2 worker processes of one env each;
  ``pong-numpy-proc2x2``, ``pong-tf-proc2x2``: 2 worker processes of 2 envs each.
  Figure: env steps/s over the raw ``gym.make("ALE/Pong-v5")`` stepped with random actions in
  one process, measured for ``--raw-seconds`` just before and just after the run (this machine's
  speed drifts by +-20% within minutes; the ratio uses the mean of the two).
- ``cartpole-numpy``: ``configs/cartpole.toml`` until solved. Figure: seconds to solve.

Every run is a fresh process. With ``--baseline PATH`` (a checkout of pgrl, e.g. made with
``git worktree add /tmp/base HEAD~1``), every setting also runs with that tree first on
``sys.path``, next to the current one in the same round (the order alternates between rounds),
and the table gives current / baseline.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
PROCESSES_2X2 = ["env.runner=processes", "env.num_workers=2", "env.envs_per_worker=2"]
SETTINGS = {
    # name: (config, backend, overrides)
    "pong-numpy-1": ("pong", "numpy", ["env.num_envs=1"]),
    "pong-numpy-2": ("pong", "numpy", ["env.num_envs=2"]),
    "pong-tf-1": ("pong", "tensorflow", ["env.num_envs=1"]),
    "pong-tf-2": ("pong", "tensorflow", ["env.num_envs=2"]),
    "pong-numpy-proc1": ("pong", "numpy", ["env.runner=processes", "env.num_workers=1"]),
    "pong-numpy-proc2": ("pong", "numpy", ["env.runner=processes", "env.num_workers=2"]),
    "pong-tf-proc2": ("pong", "tensorflow", ["env.runner=processes", "env.num_workers=2"]),
    "pong-numpy-proc2x2": ("pong", "numpy", [*PROCESSES_2X2]),
    "pong-tf-proc2x2": ("pong", "tensorflow", [*PROCESSES_2X2]),
    "cartpole-numpy": ("cartpole", "numpy", []),
}

# The child: train with whichever pgrl is first on sys.path and print its summary as JSON. Only
# pgrl.load_config and pgrl.train, which every version of pgrl has.
CHILD = """
import json, sys
import pgrl
config, backend, out, *overrides = sys.argv[1:]
summary = pgrl.train(pgrl.load_config(config, overrides), out=out, backend=backend)
print(json.dumps({"pgrl": pgrl.__file__, **summary}))
"""


def raw_rate(env_id: str, seconds: float) -> float:
    """Steps/s of the bare gymnasium env with uniformly random actions (no pgrl)."""
    import gymnasium as gym

    if env_id.startswith("ALE/"):
        import ale_py

        gym.register_envs(ale_py)
    env = gym.make(env_id)
    rng = np.random.default_rng(0)
    env.reset(seed=0)
    steps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for _ in range(200):
            _, _, terminated, truncated, _ = env.step(int(rng.integers(env.action_space.n)))
            steps += 1
            if terminated or truncated:
                env.reset()
    rate = steps / (time.perf_counter() - t0)
    env.close()
    return rate


def run_child(tree: Path, name: str, seconds: float) -> dict:
    """One training run of setting ``name`` with the pgrl of ``tree``, in a fresh process."""
    config, backend, overrides = SETTINGS[name]
    overrides = [*overrides, "log.progress=false"]
    if config == "pong":
        overrides += [f"train.max_seconds={seconds}", "train.episodes=1000000"]
    env = {**os.environ, "PYTHONPATH": str(tree), "TF_CPP_MIN_LOG_LEVEL": "3"}
    with tempfile.TemporaryDirectory() as out:
        args = [sys.executable, "-c", CHILD, str(tree / "configs" / f"{config}.toml"), backend]
        result = subprocess.run(
            [*args, out, *overrides], env=env, capture_output=True, text=True, cwd=tree
        )
    if result.returncode != 0:
        raise RuntimeError(f"{name} with {tree} failed:\n{result.stderr[-2000:]}")
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    if not summary["pgrl"].startswith(str(tree)):
        raise RuntimeError(f"the child imported {summary['pgrl']}, not the pgrl of {tree}")
    return summary


def measure(tree: Path, name: str, args) -> float:
    """The setting's figure: x raw env for Pong, seconds to solve for CartPole."""
    if SETTINGS[name][0] == "cartpole":
        s = run_child(tree, name, args.seconds)
        if not s["solved"]:
            raise RuntimeError(f"{name} with {tree} did not solve CartPole")
        return float(s["wall_time"])
    before = raw_rate("ALE/Pong-v5", args.raw_seconds)
    s = run_child(tree, name, args.seconds)
    after = raw_rate("ALE/Pong-v5", args.raw_seconds)
    return s["env_steps"] / s["wall_time"] / ((before + after) / 2)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=90.0, help="Pong training per run")
    parser.add_argument("--raw-seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--only", nargs="+", choices=list(SETTINGS), default=list(SETTINGS))
    parser.add_argument("--baseline", type=Path, help="another pgrl checkout to compare with")
    args = parser.parse_args(argv)
    trees = {"current": ROOT}
    if args.baseline is not None:
        if not (args.baseline / "pgrl" / "__init__.py").is_file():
            parser.error(f"--baseline {args.baseline}: not a pgrl checkout")
        trees["baseline"] = args.baseline.resolve()
    figures = {(name, t): [] for name in args.only for t in trees}
    for r in range(args.rounds):
        order = list(trees) if r % 2 == 0 else list(trees)[::-1]
        for name in args.only:
            for t in order:
                figures[name, t].append(measure(trees[t], name, args))
                print(f"  round {r + 1}: {name} {t}: {figures[name, t][-1]:.3f}", flush=True)
    print(f"\nmedians over {args.rounds} rounds (Pong: env steps/s x raw env; CartPole: seconds)")
    print(f"{'setting':16} " + " ".join(f"{t:>20}" for t in trees) + "  current/baseline")
    for name in args.only:
        cells = []
        for t in trees:
            xs = figures[name, t]
            cells.append(f"{np.median(xs):8.3f} ({min(xs):.2f}-{max(xs):.2f})")
        ratio = ""
        if "baseline" in trees:
            ratio = (
                f"{np.median(figures[name, 'current']) / np.median(figures[name, 'baseline']):.3f}"
            )
        print(f"{name:16} " + " ".join(f"{c:>20}" for c in cells) + f"  {ratio}")


if __name__ == "__main__":
    main()
