"""Stable-Baselines3's A2C with rl-baselines3-zoo's hyperparameters, timed to the same goal as
``pgrl compare``: the wall-clock seconds of training until the mean return of the last 100
finished episodes reaches gymnasium's threshold, on one thread, one seed at a time.

Stable-Baselines3 is not a pgrl dependency; run this from an environment that has it::

    python -m venv /tmp/sb3 && /tmp/sb3/bin/pip install torch==2.13.0 stable-baselines3 tqdm
    /tmp/sb3/bin/python scripts/sb3_race.py Acrobot-v1 --seeds 100 101 102 --out runs/sb3.csv

The row of each seed: solved or not, the episode and env step at which it was, and the
seconds. Settings (zoo's a2c.yml): Acrobot-v1 16 envs with ``normalize: true`` (the zoo's
VecNormalize with its defaults: observations and rewards), CartPole-v1 8 envs; otherwise A2C's
defaults (n_steps 5, RMSprop lr 7e-4, gamma 0.99, two 64-unit tanh layers).
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import statistics
import sys
import time
from pathlib import Path

# one thread, as pgrl's runs: set before torch is imported
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

ZOO = {
    "Acrobot-v1": {"n_envs": 16, "normalize": True, "threshold": -100.0, "steps": 500_000},
    "CartPole-v1": {"n_envs": 8, "normalize": False, "threshold": 475.0, "steps": 500_000},
}
COLUMNS = ["env", "seed", "solved", "episodes", "steps", "seconds"]


def race(env_id: str, seed: int) -> dict:
    """One A2C run of ``env_id`` until solved or its zoo step budget; its row."""
    import torch
    from stable_baselines3 import A2C
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    torch.set_num_threads(1)
    zoo = ZOO[env_id]
    envs = make_vec_env(env_id, n_envs=zoo["n_envs"], seed=seed)
    if zoo["normalize"]:
        envs = VecNormalize(envs)  # the zoo's normalize: true, VecNormalize's defaults

    class Goal(BaseCallback):
        def __init__(self):
            super().__init__()
            self.returns, self.solved_at = [], None

        def _on_training_start(self):
            self.t0 = time.perf_counter()

        def _on_step(self) -> bool:
            for info in self.locals["infos"]:
                if "episode" in info:
                    self.returns.append(info["episode"]["r"])
                    last = self.returns[-100:]
                    if len(last) == 100 and sum(last) / 100 >= zoo["threshold"]:
                        self.solved_at = time.perf_counter() - self.t0
                        return False
            return True

    goal = Goal()
    model = A2C("MlpPolicy", envs, seed=seed, device="cpu", verbose=0)
    model.learn(zoo["steps"], callback=goal)
    envs.close()
    solved = goal.solved_at is not None
    return {
        "env": env_id,
        "seed": seed,
        "solved": solved,
        "episodes": len(goal.returns),
        "steps": model.num_timesteps,
        "seconds": round(goal.solved_at, 2) if solved else "",
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("env", choices=sorted(ZOO))
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(100, 110)))
    parser.add_argument("--out", type=Path, help="CSV of the rows (written atomically)")
    args = parser.parse_args(argv)
    from tqdm import tqdm

    rows = [race(args.env, seed) for seed in tqdm(args.seeds, desc=f"SB3 A2C {args.env}")]
    text = io.StringIO()
    writer = csv.DictWriter(text, COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    print(text.getvalue(), end="")
    solved = [r["seconds"] for r in rows if r["solved"]]
    median = f"{statistics.median(solved):.2f} s" if solved else "-"
    print(f"solved {len(solved)} of {len(rows)}, median {median}")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_name(args.out.name + ".tmp")
        tmp.write_text(text.getvalue())
        tmp.replace(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
