"""Rollout throughput: env steps per second of pgrl.rollout against the raw env, same run.

    python scripts/bench.py rollout [--env cartpole|pong|all] [--seconds S] [--episodes N]
    python scripts/bench_rollout.py [same arguments]

For each env it measures the ceiling, the raw ``gym.make(env_id)`` stepped with random actions in
one process, then ``collect_episodes`` with the NumPy and the TensorFlow policy at 1 env (in
process) and 2 envs (worker processes), and prints steps per second and the ratios. ``steps/s``
counts recorded steps (the data a batch yields), ``env steps/s`` also the unrecorded steps of envs
that idle while the last episodes of a batch finish. A last check plays 10 episodes of 10,000
Pong-like steps (synthetic sparse frames) in a fresh process and reports its peak RSS.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ENVS = {
    # name: (env id, policy kwargs, policy dtypes to measure)
    "cartpole": ("CartPole-v1", {"hidden_sizes": (32,), "bias": True}, ("float64",)),
    "pong": ("ALE/Pong-v5", {"hidden_sizes": (200,)}, ("float64", "float32")),
}
BACKENDS = ("numpy", "tensorflow")


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="bench.py rollout", description=__doc__.split("\n")[0])
    parser.add_argument("--env", choices=[*ENVS, "all"], default="all")
    parser.add_argument(
        "--seconds", type=float, default=4.0, help="measuring time per row (whole batches)"
    )
    parser.add_argument("--episodes", type=int, default=10, help="episodes per batch")
    parser.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS))
    parser.add_argument("--num-envs", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-RSS check")
    parser.add_argument("--memory-child", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def raw_rate(env, seconds: float) -> float:
    """Steps per second of ``env`` with random actions: the ceiling a rollout can approach."""
    env.reset(seed=0)
    env.action_space.seed(0)
    sample, step = env.action_space.sample, env.step
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(100):
            _, _, terminated, truncated, _ = step(sample())
            if terminated or truncated:
                env.reset()
        steps += 100
    return steps / (time.perf_counter() - start)


def rollout_rate(env_id, num_envs, backend, dtype, policy_kwargs, episodes, seconds):
    """(recorded steps/s, all env steps/s) of whole batches of ``episodes``, after a warm-up."""
    from pgrl.policies import make_policy
    from pgrl.rollout import collect_episodes, make_vector_env

    envs = make_vector_env(env_id, num_envs, seed=0)
    try:
        obs_dim = envs.single_observation_space.shape[0]
        policy = make_policy(backend, obs_dim, dtype=dtype, seed=0, **policy_kwargs)
        rng = np.random.default_rng(0)
        collect_episodes(envs, policy, rng, 1)  # traces TF, loads the ROM, fills the caches
        steps = env_steps = 0
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            batch = collect_episodes(envs, policy, rng, episodes)
            steps += batch.steps
            env_steps += batch.env_steps
        elapsed = time.perf_counter() - start
    finally:
        envs.close()
    return steps / elapsed, env_steps / elapsed


def bench_env(name, args, out):
    import gymnasium as gym

    from pgrl.envs import make_env

    env_id, policy_kwargs, dtypes = ENVS[name]
    if env_id.startswith("ALE/"):
        import ale_py

        gym.register_envs(ale_py)
    ceiling = raw_rate(gym.make(env_id), args.seconds)
    rows = [(f"raw gym.make({env_id!r}), random actions", ceiling, None, None)]
    wrapped = raw_rate(make_env(env_id), args.seconds)
    rows.append(("pgrl.envs.make_env, random actions", wrapped, None, None))
    numpy_rates = {}
    for backend in args.backends:
        for dtype in dtypes:
            for num_envs in args.num_envs:
                rate, env_rate = rollout_rate(
                    env_id, num_envs, backend, dtype, policy_kwargs, args.episodes, args.seconds
                )
                label = f"rollout {backend} {dtype}, {num_envs} env{'s' * (num_envs > 1)}"
                vs_numpy = None
                if backend == "numpy":
                    numpy_rates[dtype, num_envs] = rate
                elif (dtype, num_envs) in numpy_rates:
                    vs_numpy = rate / numpy_rates[dtype, num_envs]
                rows.append((label, rate, env_rate, vs_numpy))
                print(f"  {label}: {rate:,.0f} steps/s", file=sys.stderr, flush=True)
    out.append((name, ceiling, rows))


def print_table(results):
    header = f"{'':52} {'steps/s':>9} {'env steps/s':>12} {'x raw':>7} {'x numpy':>8}"
    for name, ceiling, rows in results:
        print(f"\n{name} (ceiling: raw env, one process, random actions)")
        print(header)
        for label, rate, env_rate, vs_numpy in rows:
            env_col = f"{env_rate:12,.0f}" if env_rate is not None else f"{'':12}"
            np_col = f"{vs_numpy:8.2f}" if vs_numpy is not None else f"{'':8}"
            print(f"{label:52} {rate:9,.0f} {env_col} {rate / ceiling:7.2f} {np_col}")


def memory_child(episodes=10, length=10_000, nonzeros=50):
    """Peak RSS while collecting ``episodes`` Pong-sized episodes of ``length`` steps (NumPy)."""
    import gymnasium as gym
    from gymnasium import spaces
    from gymnasium.vector import AutoresetMode, SyncVectorEnv

    from pgrl.policies import make_policy
    from pgrl.rollout import collect_episodes

    class SparseFrames(gym.Env):
        """Pong-shaped observations: (6400,) int8 frames with ``nonzeros`` entries of +-1."""

        observation_space = spaces.Box(-1, 1, (6400,), np.int8)
        action_space = spaces.Discrete(2)

        def __init__(self):
            rng = np.random.default_rng(0)
            self.frames = np.zeros((64, 6400), np.int8)
            for f in self.frames:
                f[rng.choice(6400, nonzeros, replace=False)] = rng.choice([-1, 1], nonzeros)
            self.t = 0

        def reset(self, *, seed=None, options=None):
            super().reset(seed=seed)
            self.t = 0
            return self.frames[0], {}

        def step(self, action):
            self.t += 1
            return self.frames[self.t % 64], 0.0, self.t >= length, False, {}

    envs = SyncVectorEnv([SparseFrames], copy=False, autoreset_mode=AutoresetMode.DISABLED)
    policy = make_policy("numpy", 6400, hidden_sizes=(200,))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    batch = collect_episodes(envs, policy, np.random.default_rng(0), episodes)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"{batch.n_episodes} episodes x {length:,} steps ({nonzeros} nonzeros per frame): "
        f"batch {batch.nbytes / 2**20:.1f} MiB ({batch.nbytes / batch.steps:.0f} B/step), "
        f"peak RSS {peak:.0f} MiB (before collecting: {before:.0f} MiB)"
    )


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.memory_child:
        memory_child()
        return 0
    if args.episodes < 1 or args.seconds <= 0 or any(n < 1 for n in args.num_envs):
        print(
            "bench rollout: --episodes, --seconds and --num-envs must be positive", file=sys.stderr
        )
        return 2
    names = list(ENVS) if args.env == "all" else [args.env]
    print(f"{os.cpu_count()} CPUs; {args.episodes} episodes per batch; {args.seconds:g} s per row")
    results = []
    for name in names:
        print(f"{name} ...", file=sys.stderr, flush=True)
        bench_env(name, args, results)
    print_table(results)
    if not args.no_memory:
        print("\nmemory (fresh process):")
        sys.stdout.flush()
        subprocess.run([sys.executable, __file__, "--memory-child"], check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
