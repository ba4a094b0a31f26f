"""Policy backends: ``NumpyPolicy`` (always available) and ``TensorFlowPolicy`` (lazy).

``TensorFlowPolicy`` is loaded on first access through the module ``__getattr__``, so
``import pgrl.policies`` never imports TensorFlow.
"""

from __future__ import annotations

from pgrl.policies.base import Policy
from pgrl.policies.numpy_policy import NumpyPolicy
from pgrl.policies.threads import limit_threads, threads

BACKENDS = ("numpy", "tensorflow")

__all__ = [
    "BACKENDS",
    "NumpyPolicy",
    "Policy",
    "TensorFlowPolicy",
    "limit_threads",
    "make_policy",
    "threads",
]


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

        return tf_policy.TensorFlowPolicy(obs_dim, **kwargs)
    raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
