"""Vector envs for Pong, with the policy in the loop: which one should pgrl use?

    python scripts/bench.py vector [--seconds 15] [--rounds 3] [--num-envs 2 4]

Candidates, each playing ``pgrl.rollout.collect_episodes`` batches of ``2 * num_envs`` episodes
with the NumPy policy (Karpathy's network, float64):

- ``sync``: gymnasium's ``SyncVectorEnv`` of ``pgrl.envs.make_env`` (one process),
- ``async``: gymnasium's ``AsyncVectorEnv`` of the same (a process per env, shared memory),
- ``ale``: ale-py's ``AtariVectorEnv`` (C++ threads), through :class:`AtariPong` below, which
  turns its full-size RGB frames into pgrl's observations,
- ``workers``: pgrl's ``WorkerVectorEnv`` (a process per env but the first, shared memory),

and, for reference, ``1 env``: ``make_env`` in process. Figure: recorded steps/s over the raw
``gym.make("ALE/Pong-v5")`` stepped with random actions in one process, measured for
``--raw-seconds`` just before and after every setting; the settings' order rotates by round.
The table gives the median over rounds and the range.
"""

from __future__ import annotations

import argparse
import time

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv

ENV_ID = "ALE/Pong-v5"


class AtariPong(VectorEnv):
    """``num_envs`` Pong-v5 games in ale-py's ``AtariVectorEnv`` with ``make_env``'s observations.

    Per env: obs (6400,) int8 frame differences of Karpathy's preprocessing (zeros after a
    reset), actions 1 = UP (ALE 2), 0 = DOWN (ALE 3), float64 rewards, and autoreset disabled
    (a finished env is reset by ``reset(options={"reset_mask": done})``). ALE's vectorizer knows
    only the NextStep and SameStep modes; it runs in NextStep, which never fires because
    finished envs are reset first. Emulation as Pong-v5: frameskip 4, sticky actions 0.25, no
    no-op or FIRE starts, unclipped rewards; frames full size, RGB, unstacked, not max-pooled.
    """

    def __init__(self, num_envs: int):
        from ale_py.vector_env import AtariVectorEnv

        self.ale = AtariVectorEnv(
            "pong",
            num_envs,
            batch_size=num_envs,  # results in env order, and partial resets allowed
            autoreset_mode=AutoresetMode.NEXT_STEP,
            frameskip=4,
            repeat_action_probability=0.25,
            max_num_frames_per_episode=108_000,
            img_height=210,
            img_width=160,
            grayscale=False,
            stack_num=1,
            maxpool=False,
            noop_max=0,
            use_fire_reset=False,
            reward_clipping=False,
        )
        self.num_envs = num_envs
        self.metadata = {"autoreset_mode": AutoresetMode.DISABLED}  # not the shared class dict
        self.single_observation_space = gym.spaces.Box(-1, 1, (6400,), np.int8)
        self.single_action_space = gym.spaces.Discrete(2)
        self.lut = np.ones(256, dtype=np.int8)  # red value -> 0/1: background is 0
        self.lut[[0, 109, 144]] = 0
        self.ale_actions = np.array([3, 2], dtype=np.int32)
        self.prev = np.zeros((num_envs, 6400), dtype=np.int8)
        self.obs = np.zeros((num_envs, 6400), dtype=np.int8)

    def _binary(self, frames: np.ndarray) -> np.ndarray:
        """(n, 1, 210, 160, 3) uint8 -> (n, 6400) int8 in {0, 1}: the gist's ``prepro``."""
        return self.lut.take(frames[:, 0, 35:195:2, ::2, 0]).reshape(len(frames), 6400)

    def reset(self, *, seed=None, options=None):
        mask = np.ones(self.num_envs, bool) if options is None else options["reset_mask"]
        seeds = None if seed is None else np.asarray(seed, dtype=np.int64)[mask]
        frames, info = self.ale.reset(seed=seeds, options={"reset_mask": mask})
        self.prev[mask] = self._binary(frames)[mask]
        self.obs = self.obs.copy()
        self.obs[mask] = 0
        return self.obs, info

    def step(self, actions):
        frames, rewards, terminated, truncated, info = self.ale.step(self.ale_actions[actions])
        binary = self._binary(frames)
        self.obs, self.prev = binary - self.prev, binary
        return self.obs, rewards.astype(np.float64), terminated, truncated, info

    def close_extras(self, **kwargs):
        self.ale = None  # the C++ vectorizer joins its threads when freed


def raw_rate(env, seconds: float) -> float:
    """Steps/s of the raw env with random actions."""
    steps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for _ in range(25):
            _, _, terminated, truncated, _ = env.step(env.action_space.sample())
            if terminated or truncated:
                env.reset()
        steps += 25
    return steps / (time.perf_counter() - t0)


def make(name: str, num_envs: int):
    from pgrl.rollout import make_vector_env

    if name == "ale":
        return AtariPong(num_envs)
    if name == "1 env":
        return make_vector_env(ENV_ID, 1, seed=0)
    return make_vector_env(ENV_ID, num_envs, seed=0, vectorization=name)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15.0, help="per setting and round")
    parser.add_argument("--raw-seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--num-envs", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--candidates", nargs="+", default=["sync", "async", "ale", "workers"])
    args = parser.parse_args(argv)
    import ale_py

    from pgrl.policies import make_policy
    from pgrl.rollout import collect_episodes, slot_generators

    gym.register_envs(ale_py)
    raw = gym.make(ENV_ID)
    raw.reset(seed=0)
    raw.action_space.seed(0)
    keys = [("1 env", 1)] + [(c, n) for n in args.num_envs for c in args.candidates]
    # worker processes first, before ALE's threads exist
    envs = {k: make(*k) for k in sorted(keys, key=lambda k: k[0] == "ale")}
    policy = make_policy("numpy", obs_dim=6400, hidden_sizes=(200,), seed=0)
    rngs = {k: slot_generators(0, e.num_envs) for k, e in envs.items()}
    for k, e in envs.items():
        collect_episodes(e, policy, rngs[k], 1)  # ROM loads, caches
    ratios = {k: [] for k in keys}
    for r in range(args.rounds):
        for k in keys[r % len(keys) :] + keys[: r % len(keys)]:
            before = raw_rate(raw, args.raw_seconds)
            steps, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < args.seconds:
                steps += collect_episodes(envs[k], policy, rngs[k], 2 * k[1]).steps
            rate = steps / (time.perf_counter() - t0)
            after = raw_rate(raw, args.raw_seconds)
            ratios[k].append(rate / ((before + after) / 2))
            print(f"  round {r + 1}: {k[0]} x{k[1]}: {rate:.0f} steps/s, {ratios[k][-1]:.2f}x raw")
    for e in envs.values():
        e.close()
    print(f"\n{'vector env':12} {'envs':>4} {'x raw':>6}  range")
    for k in keys:
        xs = ratios[k]
        print(f"{k[0]:12} {k[1]:>4} {np.median(xs):6.2f}  {min(xs):.2f}-{max(xs):.2f}")


if __name__ == "__main__":
    main()
