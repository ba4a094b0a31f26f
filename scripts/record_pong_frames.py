"""Record a few Pong observations (int8 frame differences) for the shipped-agent test.

    python scripts/record_pong_frames.py tests/data/pong_frames.npz

Plays ``ALE/Pong-v5`` through ``pgrl.envs.make_env`` (seed 0, the shipped agent's actions) with
the shipped policy's sampled actions, keeps every 16th observation of the first 1,024 steps (64
rows), and writes them compressed (~10 KB).
"""

import argparse
from importlib import resources

import numpy as np

from pgrl import load_policy
from pgrl.config import load_config
from pgrl.envs import make_env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--every", type=int, default=16)
    parser.add_argument("--rows", type=int, default=64)
    args = parser.parse_args()
    policy = load_policy("pong")
    cfg = load_config(str(resources.files("pgrl.pretrained").joinpath("pong.toml")))
    env = make_env("ALE/Pong-v5", seed=0, **cfg.env.make_kwargs())
    rng = np.random.default_rng(0)
    obs, _ = env.reset(seed=0)
    rows = []
    for t in range(args.every * args.rows):
        if t % args.every == args.every - 1:
            rows.append(obs.copy())
        action = policy.sample(obs[None], np.array([rng.random()]))[0]
        obs, _, terminated, truncated, _ = env.step(int(action))
        if terminated or truncated:
            obs, _ = env.reset()
    env.close()
    frames = np.stack(rows).astype(np.int8)
    np.savez_compressed(args.out, frames=frames)
    print(f"{args.out}: {frames.shape} int8, {np.count_nonzero(frames)} nonzeros")


if __name__ == "__main__":
    main()
