"""Backends: ``NumpyPolicy`` and ``NumpyValueNet`` (always available), ``TensorFlowPolicy`` and
``TensorFlowValueNet`` (lazy).

The TensorFlow classes are loaded on first access through the module ``__getattr__``, so
``import pgrl.policies`` never imports TensorFlow.
"""

from __future__ import annotations

from pgrl.policies.base import Policy, ValueNet
from pgrl.policies.numpy_policy import NumpyPolicy, NumpyValueNet
from pgrl.policies.threads import limit_threads, threads
from pgrl.validate import BACKENDS

__all__ = [
    "BACKENDS",
    "NumpyPolicy",
    "NumpyValueNet",
    "Policy",
    "TensorFlowPolicy",
    "TensorFlowValueNet",
    "ValueNet",
    "limit_threads",
    "make_policy",
    "make_value_net",
    "threads",
]


def __getattr__(name: str):
    if name in ("TensorFlowPolicy", "TensorFlowValueNet"):
        from pgrl.policies import tf_policy

        return getattr(tf_policy, name)
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
    return _backend(backend, NumpyPolicy, "TensorFlowPolicy")(obs_dim, **kwargs)


def make_value_net(backend: str, obs_dim: int, **kwargs) -> ValueNet:
    """Build a value network ``V(s)`` by backend name; ``kwargs`` are those of
    :class:`ValueNet` (``hidden_sizes``, ``optimizer``, ``seed``, ``dtype``, ...).

    Returns:
        a :class:`NumpyValueNet` or :class:`TensorFlowValueNet`; with the same arguments both
        start from identical weights.
    """
    return _backend(backend, NumpyValueNet, "TensorFlowValueNet")(obs_dim, **kwargs)


def _backend(backend: str, numpy_class: type, tf_class: str) -> type:
    """The class of ``backend``; the TensorFlow module is imported only when asked for."""
    if backend == "numpy":
        return numpy_class
    if backend == "tensorflow":
        return __getattr__(tf_class)
    raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
