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


def ppo(
    log_probs: np.ndarray, advantages: np.ndarray, old_log_probs: np.ndarray, clip: float
) -> tuple[np.ndarray, np.ndarray]:
    """PPO's clipped surrogate: ``l_t = -min(rho_t A_t, clip(rho_t, 1 - eps, 1 + eps) A_t)`` with
    ``rho_t = exp(logp_t - logp_old_t)``; (N,) each.

    ``dL/dlogp_t = -rho_t A_t`` where the unclipped term is the smaller (or equal) one, 0 where
    the clipped one is: a step never pushes ``rho`` further out of ``[1 - eps, 1 + eps]`` in the
    direction its advantage favours.
    """
    rho = np.exp(log_probs - old_log_probs)
    unclipped = rho * advantages
    clipped = np.clip(rho, 1 - clip, 1 + clip) * advantages
    return -np.minimum(unclipped, clipped), np.where(unclipped <= clipped, -unclipped, 0.0)


def ppo_stats(log_probs: np.ndarray, old_log_probs: np.ndarray, clip: float) -> dict[str, float]:
    """How far the policy has moved from the one that played the batch: ``approx_kl``, the mean
    of ``(rho - 1) - log rho`` (an estimate of KL(pi_old || pi), >= 0), and ``clip_fraction``,
    the share of steps with ``|rho - 1| > eps``."""
    log_rho = log_probs - old_log_probs
    rho = np.exp(log_rho)
    return {
        "approx_kl": float(np.mean((rho - 1) - log_rho)),
        "clip_fraction": float(np.mean(np.abs(rho - 1) > clip)),
    }


def value_loss(values: np.ndarray, returns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The value fit: ``l_t = 0.5 * (V(s_t) - G_t)^2``, ``dL/dV_t = V(s_t) - G_t``; (N,) each."""
    dv = values - returns
    return 0.5 * np.square(dv), dv


def clipped_value_loss(
    values: np.ndarray, returns: np.ndarray, old_values: np.ndarray, clip: float
) -> tuple[np.ndarray, np.ndarray]:
    """PPO's clipped value fit: ``l_t = 0.5 * max((V_t - G_t)^2, (V'_t - G_t)^2)`` with
    ``V'_t = V_old_t + clip(V_t - V_old_t, -c, c)``, so one batch cannot move ``V`` more than
    ``c`` from the values it was collected with; ``dL/dV_t`` (N,) beside it."""
    moved = np.clip(values - old_values, -clip, clip)
    d_plain, d_clipped = values - returns, old_values + moved - returns
    plain_wins = np.square(d_plain) >= np.square(d_clipped)
    inside = np.abs(values - old_values) < clip  # where V' moves with V
    dv = np.where(plain_wins, d_plain, np.where(inside, d_clipped, 0.0))
    return 0.5 * np.maximum(np.square(d_plain), np.square(d_clipped)), dv


def chain(per_step: np.ndarray, d: np.ndarray) -> np.ndarray:
    """(N,) ``dL/dlogp_t`` (or ``dL/dH_t``) times (N,) or (N, n) ``dlogp_t/dz_t``: ``dL/dz``."""
    return per_step.reshape(-1, *([1] * (d.ndim - 1))) * d


def tf_reinforce(log_probs, advantages):
    return -advantages * log_probs


def tf_ppo(log_probs, advantages, old_log_probs, clip):
    import tensorflow as tf

    rho = tf.exp(log_probs - old_log_probs)
    clipped = tf.clip_by_value(rho, 1 - clip, 1 + clip) * advantages
    return -tf.minimum(rho * advantages, clipped)


def tf_ppo_stats(log_probs, old_log_probs, clip):
    import tensorflow as tf

    log_rho = log_probs - old_log_probs
    rho = tf.exp(log_rho)
    outside = tf.cast(tf.abs(rho - 1) > clip, log_rho.dtype)
    return {
        "approx_kl": tf.reduce_mean((rho - 1) - log_rho),
        "clip_fraction": tf.reduce_mean(outside),
    }


def tf_value_loss(values, returns):
    import tensorflow as tf

    return 0.5 * tf.square(values - returns)


def tf_clipped_value_loss(values, returns, old_values, clip):
    import tensorflow as tf

    moved = tf.clip_by_value(values - old_values, -clip, clip)
    return 0.5 * tf.maximum(tf.square(values - returns), tf.square(old_values + moved - returns))
