"""Policy micro-benchmark: microseconds per action_prob and per update, NumPy vs TensorFlow.

    python scripts/bench.py policy [--seconds 1.0]

Shapes: Pong (obs 6400, H 200, int8 frame differences with ~25 nonzeros, as the env produces)
and CartPole (obs 4, H 32), at batch 1 and 1000; for TensorFlow also action_prob as one traced
call ("TF traced") instead of its eager ops. The baseline measured in the same run is one
dense 6400x200 float64 matrix-vector product: the NumPy Pong action_prob at batch 1 should cost
no more than that.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def per_call_us(fn, seconds: float) -> float:
    """Median over 5 rounds of the mean time per call, in microseconds."""
    fn()  # warm-up (tf.function tracing, caches)
    n = 1
    while True:  # calibrate calls per round
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        dt = time.perf_counter() - t0
        if dt > seconds / 5:
            break
        n *= 2
    rounds = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        rounds.append((time.perf_counter() - t0) / n)
    return 1e6 * float(np.median(rounds))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="time per measurement")
    parser.add_argument("--backends", nargs="+", default=["numpy", "tensorflow"])
    parser.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    args = parser.parse_args(argv)
    from pgrl.policies import make_policy
    from pgrl.sparse import random_frame_differences

    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((6400, 200))
    x1 = rng.standard_normal((1, 6400))
    baseline = per_call_us(lambda: x1 @ w1, args.seconds)
    print(f"baseline: dense 1x6400 @ 6400x200 float64 matvec: {baseline:.1f} us\n")

    cases = {"pong": (6400, (200,)), "cartpole": (4, (32,))}
    header = f"{'net':9} {'batch':>5} {'op':12}" + "".join(f"{b:>12}" for b in args.backends)
    if len(args.backends) == 2:
        header += f"{'TF/NumPy':>10}"
    header += f"{'NumPy/matvec':>14}"
    print(f"microseconds per call, dtype {args.dtype}")
    print(header)
    for net, (obs_dim, hidden) in cases.items():
        policies = {
            b: make_policy(b, obs_dim=obs_dim, hidden_sizes=hidden, dtype=args.dtype)
            for b in args.backends
        }
        for batch in (1, 1000):
            obs = (
                random_frame_differences(rng, batch)
                if net == "pong"
                else rng.standard_normal((batch, obs_dim))
            )
            actions = (rng.random(batch) < 0.5).astype(np.int8)
            advantages = rng.standard_normal(batch)
            for op in ("action_prob", "update"):
                times = {}
                for b, policy in policies.items():
                    if op == "action_prob":
                        times[b] = per_call_us(
                            lambda p=policy, x=obs: p.action_prob(x), args.seconds
                        )
                    else:
                        times[b] = per_call_us(
                            lambda p=policy, x=obs, a=actions, adv=advantages: p.update(x, a, adv),
                            args.seconds,
                        )
                row = f"{net:9} {batch:>5} {op:12}" + "".join(f"{times[b]:>12.1f}" for b in times)
                if len(times) == 2:
                    row += f"{times['tensorflow'] / times['numpy']:>10.2f}"
                if "numpy" in times:
                    row += f"{times['numpy'] / baseline:>14.2f}"
                print(row, flush=True)
            if "tensorflow" in policies:
                traced = per_call_us(_traced_action_prob(policies["tensorflow"], obs), args.seconds)
                print(f"{net:9} {batch:>5} {'  TF traced':12}{traced:>24.1f}")


def _traced_action_prob(policy, obs):
    """For comparison: TF's action_prob as one traced call of the same forward pass on the
    policy's variables (what TensorFlowPolicy does for updates), instead of eager ops."""
    import tensorflow as tf

    from pgrl.policies.tf_policy import forward

    x, sparse = policy._inputs(policy._check_obs(obs))
    spec = (
        (
            tf.TensorSpec([None, 2], tf.int64),
            tf.TensorSpec([None], policy.dtype),
            tf.TensorSpec([2], tf.int64),
        )
        if sparse
        else tf.TensorSpec([None, policy.obs_dim], policy.dtype)
    )
    fn = tf.function(lambda x: tf.sigmoid(forward(policy._layers(policy._vars), x))[:, 0])
    call = fn.get_concrete_function(spec)
    x = tuple(tf.constant(a) for a in x) if sparse else tf.constant(x)
    return lambda: call(x).numpy()


if __name__ == "__main__":
    main()
