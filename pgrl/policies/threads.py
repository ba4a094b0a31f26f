"""Threads per op of both backends: one by default, so that a run's numbers do not depend on the
machine's core count or on where the run happens.

BLAS (NumPy's matrix products) and TensorFlow's kernels split a long sum among their threads and
add the parts in an order that depends on how many there are: with 1 or 2 threads, a Pong-sized
``x @ W1`` differs in its last bits, and a chaotic training run then drifts to another curve. So a
policy computes with ``threads()`` threads per op (BLAS through threadpoolctl, process-wide;
TensorFlow's intra- and inter-op pools, which can only be set before TensorFlow's first
computation). pgrl's parallelism is its envs, rollout workers and trials, not threads within an op.
"""

from __future__ import annotations

_threads = 1
_blas_limited: int | None = None  # the BLAS limit in force, once pgrl has set one


def threads() -> int:
    """Threads per op that pgrl's policies compute with."""
    return _threads


def limit_threads(n: int) -> None:
    """Let the backends use ``n`` threads per op (default 1).

    More threads can speed up large products on a machine with idle cores, but a run's numbers
    then depend on ``n``: runs compare exactly only with the same ``n``. TensorFlow takes the
    change if it has not computed anything yet in this process.
    """
    global _threads
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"threads must be a positive integer, got {n!r}")
    _threads = n
    if _blas_limited is not None:
        limit_blas()
    import sys

    if "pgrl.policies.tf_policy" in sys.modules:
        sys.modules["pgrl.policies.tf_policy"].set_threads(n)


def limit_blas() -> None:
    """Put NumPy's BLAS at ``threads()`` threads (process-wide; a no-op when already there)."""
    global _blas_limited
    if _blas_limited != _threads:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=_threads, user_api="blas")
        _blas_limited = _threads
