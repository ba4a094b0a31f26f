"""The losses pgrl minimises, written against log-probabilities and values, in NumPy and beside
them in TensorFlow ops.

A policy objective gives the per-step loss ``l_t`` and ``dL/dlogp_t``; the policy's gradient is
then ``sum_t dL/dlogp_t * dlogp_t/dtheta - c * sum_t dH_t/dtheta`` (the entropy bonus), with the
distribution of the head giving ``dlogp/dout`` and ``dH/dout`` and the network the rest. The
TensorFlow twins give ``l_t`` alone: ``tf.GradientTape`` takes the derivatives.
"""

from __future__ import annotations

import numpy as np


def reinforce(log_probs: np.ndarray, advantages: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """REINFORCE: ``l_t = -A_t * log pi(a_t | s_t)``, ``dL/dlogp_t = -A_t``; (N,) each.

    Minimising ``sum_t l_t`` is Karpathy's gradient ascent on ``sum_t A_t log pi(a_t | s_t)``.
    """
    return -advantages * log_probs, -advantages


def value_loss(values: np.ndarray, returns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The value fit: ``l_t = 0.5 * (V(s_t) - G_t)^2``, ``dL/dV_t = V(s_t) - G_t``; (N,) each."""
    dv = values - returns
    return 0.5 * np.square(dv), dv


def chain(per_step: np.ndarray, d: np.ndarray) -> np.ndarray:
    """(N,) ``dL/dlogp_t`` (or ``dL/dH_t``) times (N,) or (N, n) ``dlogp_t/dz_t``: ``dL/dz``."""
    return per_step.reshape(-1, *([1] * (d.ndim - 1))) * d


def tf_reinforce(log_probs, advantages):
    return -advantages * log_probs


def tf_value_loss(values, returns):
    import tensorflow as tf

    return 0.5 * tf.square(values - returns)
