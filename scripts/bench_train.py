"""Training throughput: env steps/s of whole training runs (updates included) against the raw env.

    python scripts/bench.py train [--config configs/pong.toml] [--seconds 600] [--num-envs 1 2]

Trains with the config for ``--seconds`` of wall clock per setting (a fresh run directory each)
and prints env steps per second against the ceiling, the raw ``gym.make(env_id)`` stepped with
random actions in one process, measured for ``--raw-seconds`` just before and just after each
setting (this VM's speed drifts by +-20% within minutes; the ratio uses the mean of the two).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import numpy as np


def raw_rate(env_id: str, seconds: float, env_kwargs: dict) -> float:
    """Steps/s of the bare gymnasium env with uniformly random actions (no pgrl)."""
    import gymnasium as gym

    if env_id.startswith("ALE/"):
        import ale_py

        gym.register_envs(ale_py)
    env = gym.make(env_id, **env_kwargs)
    rng = np.random.default_rng(0)
    env.reset(seed=0)
    n_actions = env.action_space.n
    steps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for _ in range(200):
            _, _, terminated, truncated, _ = env.step(int(rng.integers(n_actions)))
            steps += 1
            if terminated or truncated:
                env.reset()
    rate = steps / (time.perf_counter() - t0)
    env.close()
    return rate


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/pong.toml")
    parser.add_argument("--seconds", type=float, default=600.0, help="training time per setting")
    parser.add_argument("--raw-seconds", type=float, default=30.0)
    parser.add_argument("--num-envs", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--backends", nargs="+", default=["numpy"])
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from pgrl.config import load_config
    from pgrl.reinforce import train

    cfg = load_config(args.config, args.set)
    print(f"{cfg.env.id}; ceiling: the raw env, random actions, 1 process, before/after")
    print(
        f"{'backend':11} {'envs':>4} {'seconds':>8} {'episodes':>8} {'env steps':>10} "
        f"{'steps/s':>8} {'ceiling':>13} {'x ceiling':>9} {'running return':>15}"
    )
    for backend in args.backends:
        for num_envs in args.num_envs:
            run_cfg = load_config(
                args.config,
                [
                    *args.set,
                    f"env.num_envs={num_envs}",
                    f"train.max_seconds={args.seconds}",
                    "train.episodes=1000000",
                    "log.progress=false",
                ],
            )
            before = raw_rate(cfg.env.id, args.raw_seconds, cfg.env.kwargs)
            with tempfile.TemporaryDirectory() as out:
                s = train(run_cfg, out=out, backend=backend)
            after = raw_rate(cfg.env.id, args.raw_seconds, cfg.env.kwargs)
            ceiling = (before + after) / 2
            rate = s["env_steps"] / s["wall_time"]
            print(
                f"{backend:11} {num_envs:>4} {s['wall_time']:>8.0f} {s['episodes']:>8} "
                f"{s['env_steps']:>10} {rate:>8.0f} {before:>6.0f}/{after:<6.0f} "
                f"{rate / ceiling:>9.2f} {s['final_running_return']:>15.2f}",
                flush=True,
            )
            print(json.dumps({"backend": backend, "num_envs": num_envs, **s}), flush=True)


if __name__ == "__main__":
    main()
