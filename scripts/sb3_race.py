"""Stable-Baselines3's A2C or PPO with rl-baselines3-zoo's hyperparameters, timed to the same
goal as ``pgrl compare``: the wall-clock seconds of training until the mean return of the last
100 finished episodes reaches gymnasium's threshold, on one thread, one seed at a time. The
continuous envs' goals are ours: Pendulum-v1 (gymnasium has none) -200, InvertedPendulum-v5
1000, its maximum (gymnasium's is 950); HalfCheetah-v5 has none: its runs, and any run with
``--no-goal``, go on for the whole budget, and their row has the mean return of the last 100
episodes, the steps and the seconds at the end.

Stable-Baselines3 is not a pgrl dependency; run this from an environment that has it::

    python -m venv /tmp/sb3
    /tmp/sb3/bin/pip install torch==2.13.0 stable-baselines3 "gymnasium[box2d,mujoco]" tqdm
    /tmp/sb3/bin/python scripts/sb3_race.py Acrobot-v1 --algo ppo --seeds 100 101 --out sb3.csv

The row of each seed: solved or not, the episode and env step at which it was, and the
seconds. Settings: the zoo's a2c.yml and ppo.yml entries (``normalize: true`` is VecNormalize
of observations and rewards, a dict its keyword arguments, with the algorithm's ``gamma`` if the
entry has one, as the zoo's; ``policy_kwargs`` the zoo's string as a dict, its activation
function named; ``lin_x`` a rate falling linearly from x to 0), run for the zoo's step budget or
``--max-seconds``, whichever ends first. The CSV is rewritten after each seed.
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

THRESHOLDS = {
    "Acrobot-v1": -100.0, "CartPole-v1": 475.0, "LunarLander-v3": 200.0,
    "Pendulum-v1": -200.0, "InvertedPendulum-v5": 1000.0, "HalfCheetah-v5": None,
}  # fmt: skip
# rl-baselines3-zoo's hyperparams/{a2c,ppo}.yml (LunarLander: its v2 entries; InvertedPendulum:
# its MuJoCo InvertedPendulum-v2 entry; HalfCheetah: its HalfCheetah-v4 entry); ``lin``: the
# keys whose values fall linearly to 0 over the step budget; ``n_envs`` 1 where the zoo's entry
# has none
ZOO = {
    ("a2c", "Acrobot-v1"): {"n_envs": 16, "normalize": True, "steps": 500_000},
    ("a2c", "CartPole-v1"): {"n_envs": 8, "steps": 500_000},
    ("a2c", "LunarLander-v3"): {
        "n_envs": 8, "steps": 200_000, "gamma": 0.995, "n_steps": 5,
        "learning_rate": 0.00083, "ent_coef": 1e-5, "lin": ("learning_rate",),
    },
    ("ppo", "Acrobot-v1"): {
        "n_envs": 16, "normalize": True, "steps": 1_000_000, "n_steps": 256,
        "gae_lambda": 0.94, "gamma": 0.99, "n_epochs": 4, "ent_coef": 0.0,
    },
    ("ppo", "CartPole-v1"): {
        "n_envs": 8, "steps": 100_000, "n_steps": 32, "batch_size": 256, "gae_lambda": 0.8,
        "gamma": 0.98, "n_epochs": 20, "ent_coef": 0.0, "learning_rate": 0.001,
        "clip_range": 0.2, "lin": ("learning_rate", "clip_range"),
    },
    ("ppo", "LunarLander-v3"): {
        "n_envs": 16, "steps": 1_000_000, "n_steps": 1024, "batch_size": 64,
        "gae_lambda": 0.98, "gamma": 0.999, "n_epochs": 4, "ent_coef": 0.01,
    },
    ("ppo", "Pendulum-v1"): {
        "n_envs": 4, "steps": 100_000, "n_steps": 1024, "gae_lambda": 0.95, "gamma": 0.9,
        "n_epochs": 10, "ent_coef": 0.0, "learning_rate": 1e-3, "clip_range": 0.2,
        "use_sde": True, "sde_sample_freq": 4,
    },
    ("ppo", "InvertedPendulum-v5"): {
        "n_envs": 1, "normalize": True, "steps": 1_000_000, "batch_size": 64, "n_steps": 32,
        "gamma": 0.999, "learning_rate": 0.000222425, "ent_coef": 1.37976e-07,
        "clip_range": 0.4, "n_epochs": 5, "gae_lambda": 0.9, "max_grad_norm": 0.3,
        "vf_coef": 0.19816,
    },
    ("ppo", "HalfCheetah-v5"): {
        "n_envs": 1, "normalize": True, "steps": 1_000_000, "batch_size": 64, "n_steps": 512,
        "gamma": 0.98, "learning_rate": 2.0633e-05, "ent_coef": 0.000401762, "clip_range": 0.1,
        "n_epochs": 20, "gae_lambda": 0.92, "max_grad_norm": 0.8, "vf_coef": 0.58096,
        "policy_kwargs": {
            "log_std_init": -2, "ortho_init": False, "activation_fn": "ReLU",
            "net_arch": {"pi": [256, 256], "vf": [256, 256]},
        },
    },
}  # fmt: skip
COLUMNS = ["algo", "env", "seed", "solved", "episodes", "steps", "seconds", "mean100"]


def race(algo: str, env_id: str, seed: int, max_seconds: float, goal: bool = True) -> dict:
    """One run of ``algo`` on ``env_id`` until solved, its zoo step budget or ``max_seconds``;
    its row. Without a threshold, or ``goal`` false, it runs the budget (or ``max_seconds``) and
    its seconds are the whole run's."""
    import torch
    from stable_baselines3 import A2C, PPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    torch.set_num_threads(1)
    zoo = dict(ZOO[algo, env_id])
    threshold = THRESHOLDS[env_id] if goal else None
    n_envs, steps, normalize = zoo.pop("n_envs"), zoo.pop("steps"), zoo.pop("normalize", False)
    for key in zoo.pop("lin", ()):
        zoo[key] = (lambda start: lambda remaining: remaining * start)(zoo[key])
    if "policy_kwargs" in zoo:
        kwargs = dict(zoo["policy_kwargs"])
        if "activation_fn" in kwargs:
            kwargs["activation_fn"] = getattr(torch.nn, kwargs["activation_fn"])
        zoo["policy_kwargs"] = kwargs
    envs = make_vec_env(env_id, n_envs=n_envs, seed=seed)
    if normalize:
        # the zoo's normalize: true (or its dict of keyword arguments), with the entry's gamma
        kwargs = dict(normalize) if isinstance(normalize, dict) else {}
        if "gamma" in zoo:
            kwargs["gamma"] = zoo["gamma"]
        envs = VecNormalize(envs, **kwargs)

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
                    if threshold is None or len(last) < 100:
                        continue
                    if sum(last) / 100 >= threshold:
                        self.solved_at = time.perf_counter() - self.t0
                        return False
            return time.perf_counter() - self.t0 < max_seconds

        def _on_training_end(self):
            self.t1 = time.perf_counter()

    goal = Goal()
    cls = {"a2c": A2C, "ppo": PPO}[algo]
    model = cls("MlpPolicy", envs, seed=seed, device="cpu", verbose=0, **zoo)
    model.learn(steps, callback=goal)
    envs.close()
    solved = goal.solved_at is not None
    seconds = round(goal.solved_at, 2) if solved else ""
    if threshold is None:
        seconds = round(goal.t1 - goal.t0, 2)
    return {
        "algo": algo,
        "env": env_id,
        "seed": seed,
        "solved": solved if threshold is not None else "",
        "episodes": len(goal.returns),
        "steps": model.num_timesteps,
        "seconds": seconds,
        "mean100": round(sum(goal.returns[-100:]) / max(len(goal.returns[-100:]), 1), 1),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("env", choices=sorted(THRESHOLDS))
    parser.add_argument("--algo", choices=("a2c", "ppo"), default="a2c")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(100, 110)))
    parser.add_argument("--max-seconds", type=float, default=float("inf"), help="per seed")
    parser.add_argument(
        "--no-goal", action="store_true", help="run the whole budget even if the env has a goal"
    )
    parser.add_argument("--out", type=Path, help="CSV of the rows (written atomically)")
    args = parser.parse_args(argv)
    if (args.algo, args.env) not in ZOO:
        parser.error(f"no zoo entry for {args.algo} on {args.env}")
    from tqdm import tqdm

    goal = not args.no_goal and THRESHOLDS[args.env] is not None
    desc = f"SB3 {args.algo.upper()} {args.env}"
    rows = []
    for seed in tqdm(args.seeds, desc):
        rows.append(race(args.algo, args.env, seed, args.max_seconds, goal))
        text = io.StringIO()
        writer = csv.DictWriter(text, COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
        tqdm.write(",".join(str(rows[-1][c]) for c in COLUMNS))
        if args.out is not None:  # after each seed, so a stopped race keeps its rows
            args.out.parent.mkdir(parents=True, exist_ok=True)
            tmp = args.out.with_name(args.out.name + ".tmp")
            tmp.write_text(text.getvalue())
            tmp.replace(args.out)
    print(text.getvalue(), end="")
    if goal:
        solved = [r["seconds"] for r in rows if r["solved"]]
        median = f"{statistics.median(solved):.2f} s" if solved else "-"
        print(f"solved {len(solved)} of {len(rows)}, median {median}")
    else:
        for r in rows:
            print(f"seed {r['seed']}: mean100 {r['mean100']}, {r['steps']} steps, {r['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
