"""Policy backends: ``NumpyPolicy`` (always available) and ``TensorFlowPolicy`` (lazy).

``TensorFlowPolicy`` is loaded on first access through the module ``__getattr__``, so
``import pgrl.policies`` never imports TensorFlow.
"""

from __future__ import annotations

from pgrl.policies.base import Policy
from pgrl.policies.numpy_policy import NumpyPolicy

BACKENDS = ("numpy", "tensorflow")

__all__ = ["BACKENDS", "NumpyPolicy", "Policy", "TensorFlowPolicy", "limit_threads", "make_policy"]

_threads: int | None = None  # per-op thread pool size for TensorFlow; None: its default


def __getattr__(name: str):
    if name == "TensorFlowPolicy":
        from pgrl.policies.tf_policy import TensorFlowPolicy

        return TensorFlowPolicy
    raise AttributeError(f"module 'pgrl.policies' has no attribute {name!r}")


def make_policy(backend: str, obs_dim: int, **kwargs) -> Policy:
    """Build a policy by backend name; ``kwargs`` are those of :class:`Policy`.

    Args:
        backend: ``"numpy"`` or ``"tensorflow"``.
        obs_dim: width of one observation.

    Returns:
        a :class:`NumpyPolicy` or :class:`TensorFlowPolicy`; with the same arguments both
        start from identical weights.
    """
    if backend == "numpy":
        return NumpyPolicy(obs_dim, **kwargs)
    if backend == "tensorflow":
        from pgrl.policies import tf_policy

        if _threads is not None:
            tf_policy.set_threads(_threads)
        return tf_policy.TensorFlowPolicy(obs_dim, **kwargs)
    raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")


def limit_threads(n: int) -> None:
    """Give backends with their own thread pools (TensorFlow) ``n`` threads per op.

    For several training runs side by side (``pgrl compare``), where the runs are the
    parallelism. Takes effect if called before the backend's first computation.
    """
    global _threads
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"threads must be a positive integer, got {n!r}")
    _threads = n
