"""Rollout throughput: env steps per second of pgrl.rollout against the raw env, same run.

    python scripts/bench.py rollout [--env cartpole|pong|all] [--seconds S] [--rounds R]
    python scripts/bench_rollout.py [same arguments]

For each env it measures the ceiling, the raw ``gym.make(env_id)`` stepped with random actions in
one process, then ``collect_episodes`` with the NumPy and the TensorFlow policy at 1 env (in
process) and 2 envs (``async``: a process each, gymnasium's AsyncVectorEnv; for CartPole also
``sync``: 2 and 20 in process, the latter
with at least 20 episodes per batch, as ``configs/cartpole.toml``), and prints steps per second
and the ratios. ``steps/s`` counts recorded steps (the data a batch yields), ``env
steps/s`` also the unrecorded steps of envs that idle, in worker processes, while the last
episodes of a batch finish. The row "AsyncVectorEnv of 2 make_env" steps the worker processes
with random actions and no policy: what 2 envs in worker processes allow at best. Rollout
workers that own the policy (``env.runner = "processes"``) are measured by ``bench.py train``.

Every row is measured ``--rounds`` times, round-robin over the rows. A measurement interleaves
the row with the raw env: each slice of the row (one batch of the rollout, or ``--slice``
seconds of the rows that have no batches) sits between two runs of the raw env which together
last as long as the slice, the first one half as long as the row's previous slice, so that even
a seconds-long batch is centred in its reference; this goes on until the row has run
``--seconds``, and its ratio is the row's rate over the raw env's rate in those runs. This VM's
speed drifts by +-20% within seconds: two back-to-back 1-second measurements of the raw env
differ by up to 25%, while interleaving 0.05-second slices brings the raw env's ratio to itself
within +-3% (the first row of each table is that check). CartPole's batches (~5 ms) are paired
tightly; Pong's batches of 10 episodes take ~2-3 s, so its ratios keep more of the drift. The
table shows medians over rounds and their range.
A last check plays 10 episodes of 10,000 Pong-sized steps (synthetic sparse frames) in a fresh
process and reports its peak RSS.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time

import numpy as np

ENVS = {
    # name: (env id, policy kwargs, policy dtypes, (num_envs, vectorization) settings)
    "cartpole": (
        "CartPole-v1",
        {"hidden_sizes": (32,), "bias": True},
        ("float64",),
        # 20 envs in process, one episode each per batch: configs/cartpole.toml's setting
        ((1, "sync"), (2, "async"), (2, "sync"), (20, "sync")),
    ),
    "pong": (
        "ALE/Pong-v5",
        {"hidden_sizes": (200,)},
        ("float64", "float32"),
        ((1, "sync"), (2, "async")),
    ),
    # the gaussian head: pendulum_ppo's network and 4 envs, and the same 4 with the policy asked
    # for all rows at once ("rows together": not pgrl's rule, whose actions do not depend on
    # how many slots share a call), what asking row by row costs
    "pendulum": (
        "Pendulum-v1",
        {"hidden_sizes": (64, 64), "bias": True, "head": "gaussian", "action_dim": 1},
        ("float64",),
        ((1, "sync"), (4, "sync"), (4, "rows together")),
    ),
}
BACKENDS = ("numpy", "tensorflow")


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="bench.py rollout", description=__doc__.split("\n")[0])
    parser.add_argument("--env", choices=[*ENVS, "all"], default="all")
    parser.add_argument(
        "--seconds", type=float, default=2.0, help="measuring time per row and round"
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="rounds per row; the table shows medians"
    )
    parser.add_argument(
        "--slice",
        type=float,
        default=0.05,
        help="seconds of a slice for rows without batches (raw env, vector envs)",
    )
    parser.add_argument("--episodes", type=int, default=10, help="episodes per batch")
    parser.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS))
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-RSS check")
    parser.add_argument("--memory-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.episodes < 1 or args.rounds < 1 or args.seconds <= 0 or args.slice <= 0:
        parser.error("--episodes, --rounds, --seconds and --slice must be positive")
    return args


# A run(seconds) below plays one slice and returns (steps, env steps or None, elapsed seconds).


def raw_row(env):
    """A run(seconds) of ``env`` stepped with random actions: the ceiling. The env carries on
    from slice to slice, as one long run would."""
    env.reset(seed=0)
    env.action_space.seed(0)
    sample, step = env.action_space.sample, env.step

    def run(seconds):
        steps, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            for _ in range(10):
                _, _, terminated, truncated, _ = step(sample())
                if terminated or truncated:
                    env.reset()
            steps += 10
        return steps, None, time.perf_counter() - start

    return run, env.close


def vector_row(env_id, num_envs, vectorization):
    """A run(seconds) of a worker-process vector env (``"workers"`` or ``"async"``) stepped
    with random actions and no policy: the ceiling of any rollout on it."""
    from pgrl.rollout import make_vector_env

    envs = make_vector_env(env_id, num_envs, seed=0, vectorization=vectorization)
    envs.action_space.seed(0)
    envs.reset(seed=list(range(num_envs)))

    def run(seconds):
        steps, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            _, _, terminated, truncated, _ = envs.step(envs.action_space.sample())
            steps += num_envs
            done = terminated | truncated
            if done.any():
                envs.reset(options={"reset_mask": done})
        return steps, None, time.perf_counter() - start

    return run, envs.close


def rollout_row(env_id, num_envs, vectorization, backend, dtype, policy_kwargs, episodes):
    """A run(seconds) of one whole batch of ``collect_episodes`` (``seconds`` is ignored), after
    two warm-up batches; ``run.last`` is the length of the latest batch."""
    from pgrl.policies import make_policy
    from pgrl.rollout import collect_episodes, make_vector_env, slot_generators

    together = vectorization == "rows together"
    if together:
        vectorization = "sync"
    envs = make_vector_env(env_id, num_envs, seed=0, vectorization=vectorization)
    obs_dim = envs.single_observation_space.shape[0]
    policy = make_policy(backend, obs_dim, dtype=dtype, seed=0, **policy_kwargs)
    if together:  # this policy's distribution alone: one object, not the class
        policy.distribution.sample_rows_alone = False
    rngs = slot_generators(0, num_envs)
    collect_episodes(envs, policy, rngs, 1)  # traces TF, loads the ROM, fills the caches

    def run(seconds):
        start = time.perf_counter()
        batch = collect_episodes(envs, policy, rngs, episodes)
        run.last = time.perf_counter() - start
        return batch.steps, batch.env_steps, run.last

    run(0)  # one whole batch: its length centres the first raw reference (see interleaved)
    return run, envs.close


def interleaved(raw_run, run, seconds, slice_seconds):
    """(rate, env rate or None, rate over the raw env's rate) of ``run`` for ``seconds``.

    Each slice of ``run`` sits between two runs of the raw env, of half the previous slice's
    length before (``run.last``, for a row's first slice of a round) and the rest of its own
    length after: the raw env runs as long as the row, centred on it, so a drift across a long
    slice (a Pong batch: seconds) cancels to first order.
    """
    raw_steps = raw_time = steps = elapsed = 0.0
    env_steps = None
    before = getattr(run, "last", slice_seconds) / 2
    while elapsed < seconds:
        s, _, t_before = raw_run(before)
        raw_steps, raw_time = raw_steps + s, raw_time + t_before
        s, e, t = run(slice_seconds)
        steps, elapsed = steps + s, elapsed + t
        if e is not None:
            env_steps = (env_steps or 0) + e
        s, _, t_after = raw_run(max(t - t_before, 0.0))
        raw_steps, raw_time = raw_steps + s, raw_time + t_after
        before = t / 2
    rate = steps / elapsed
    return rate, None if env_steps is None else env_steps / elapsed, rate / (raw_steps / raw_time)


def bench_env(name, args):
    """[(label, steps/s, env steps/s or None, x raw, (min, max) x raw, x NumPy or None)] for
    one env: medians over rounds."""
    import gymnasium as gym

    from pgrl.envs import make_env

    env_id, policy_kwargs, dtypes, settings = ENVS[name]
    if env_id.startswith("ALE/"):
        import ale_py

        gym.register_envs(ale_py)
    rows = [
        (f"raw gym.make({env_id!r}), random actions", *raw_row(gym.make(env_id))),
        ("pgrl.envs.make_env, random actions", *raw_row(make_env(env_id))),
        ("AsyncVectorEnv of 2 make_env, random actions", *vector_row(env_id, 2, "async")),
    ]
    keys = [None] * len(rows)
    for backend in args.backends:
        for dtype in dtypes:
            for num_envs, vectorization in settings:
                label = f"rollout {backend} {dtype}, 1 env"
                if num_envs > 1:
                    label = f"rollout {backend} {dtype}, {num_envs} envs {vectorization}"
                episodes = max(args.episodes, num_envs)  # every env plays an episode
                row = rollout_row(
                    env_id, num_envs, vectorization, backend, dtype, policy_kwargs, episodes
                )
                rows.append((label, *row))
                keys.append((backend, dtype, num_envs, vectorization))
    # Every row's reference: the same raw env as the first row, built apart, so that the first
    # row checks the method (its ratio should be 1.00 up to noise).
    raw_run, raw_close = raw_row(gym.make(env_id))
    rates = [[] for _ in rows]
    env_rates = [[] for _ in rows]
    ratios = [[] for _ in rows]
    try:
        for r in range(args.rounds):
            for k, (label, run, _) in enumerate(rows):
                rate, env_rate, x = interleaved(raw_run, run, args.seconds, args.slice)
                rates[k].append(rate)
                env_rates[k].append(env_rate)
                ratios[k].append(x)
                print(
                    f"  round {r + 1}: {label}: {rate:,.0f} steps/s, {x:.2f}x raw",
                    file=sys.stderr,
                    flush=True,
                )
    finally:
        for _, _, close in rows:
            close()
        raw_close()
    x_raw = [float(np.median(x)) for x in ratios]
    numpy_x = {key[1:]: x for key, x in zip(keys, x_raw, strict=True) if key and key[0] == "numpy"}
    out = []
    for (label, _, _), key, rate, env_rate, x, xs in zip(
        rows, keys, rates, env_rates, x_raw, ratios, strict=True
    ):
        vs_numpy = None
        if key and key[0] != "numpy" and key[1:] in numpy_x:
            vs_numpy = x / numpy_x[key[1:]]
        env_rate = None if env_rate[0] is None else float(np.median(env_rate))
        out.append((label, float(np.median(rate)), env_rate, x, (min(xs), max(xs)), vs_numpy))
    return out


def print_table(name, rows):
    one_env = rows[1][3]
    print(
        f"\n{name} (medians over rounds; x raw: against the raw env in one process, interleaved "
        "with it; range: of x raw over rounds; x env: against make_env in one process; "
        "x numpy: the TF row against the NumPy row of the same setting)"
    )
    print(
        f"{'':52} {'steps/s':>9} {'env steps/s':>12} {'x raw':>7} {'range':>11} {'x env':>7} "
        f"{'x numpy':>8}"
    )
    for label, rate, env_rate, x_raw, (lo, hi), vs_numpy in rows:
        env_col = f"{env_rate:12,.0f}" if env_rate is not None else f"{'':12}"
        np_col = f"{vs_numpy:8.2f}" if vs_numpy is not None else f"{'':8}"
        print(
            f"{label:52} {rate:9,.0f} {env_col} {x_raw:7.2f} {f'{lo:.2f}-{hi:.2f}':>11} "
            f"{x_raw / one_env:7.2f} {np_col}"
        )


def peak_rss_mib() -> float:
    """This process's peak resident memory: VmHWM (reset at exec, unlike ru_maxrss)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def memory_child(episodes=10, length=10_000, nonzeros=50):
    """Peak RSS while collecting ``episodes`` Pong-sized episodes of ``length`` steps (NumPy)."""
    import gymnasium as gym
    from gymnasium import spaces
    from gymnasium.vector import AutoresetMode, SyncVectorEnv

    from pgrl.policies import make_policy
    from pgrl.rollout import collect_episodes, slot_generators

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
    before = peak_rss_mib()
    batch = collect_episodes(envs, policy, slot_generators(0, 1), episodes)
    peak = peak_rss_mib()
    print(
        f"{batch.n_episodes} episodes x {length:,} steps ({nonzeros} nonzeros per frame): "
        f"batch {batch.nbytes / 2**20:.1f} MiB ({batch.nbytes / batch.steps:.0f} B/step), "
        f"peak RSS {peak:.0f} MiB (before collecting: {before:.0f} MiB)"
    )


def main(argv=None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.memory_child:
        memory_child()
        return
    names = list(ENVS) if args.env == "all" else [args.env]
    print(
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start; "
        f"{args.episodes} episodes per batch; median of {args.rounds} x {args.seconds:g} s per "
        f"row, interleaved with the raw env in slices of a batch or {args.slice:g} s"
    )
    for name in names:
        print(f"{name} ...", file=sys.stderr, flush=True)
        print_table(name, bench_env(name, args))
        sys.stdout.flush()
    print(f"\nload average {os.getloadavg()[0]:.2f} at the end")
    if not args.no_memory:
        print("\nmemory (fresh process):", flush=True)
        subprocess.run([sys.executable, __file__, "--memory-child"], check=True)


if __name__ == "__main__":
    main()
