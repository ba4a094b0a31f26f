"""Observation normalization (``env.normalize_obs``): the running mean and variance of every
observation played so far, as Stable-Baselines3's ``VecNormalize`` keeps them.

The networks see ``clip((x - mean) / sqrt(var + eps), -10, 10)``. The statistics stay fixed while
a batch is played and trained on, then take in the batch's observations: each env slot's moments
``(n, mean, m2)`` (computed where the slot was played), pooled in slot order (Chan, Golub and
LeVeque's update), so every backend, runner and worker count sees the same numbers. They start
at mean 0, variance 1 and a count of 1e-4 (``VecNormalize``'s), and are saved in checkpoints and
weights files as ``obs_mean``, ``obs_var`` and ``obs_count``.
"""

from __future__ import annotations

import numpy as np

KEYS = ("obs_mean", "obs_var", "obs_count")


def obs_moments(x) -> tuple[int, np.ndarray, np.ndarray]:
    """``(n, mean (D,), m2 (D,))`` of (n, D) observations, ``m2 = sum (x - mean)^2`` per column."""
    x = np.asarray(x, dtype=np.float64)
    if x.shape[0] == 0:
        return 0, np.zeros(x.shape[1]), np.zeros(x.shape[1])
    mean = x.mean(axis=0)
    return int(x.shape[0]), mean, np.sum(np.square(x - mean), axis=0)


def pool(a: tuple, b: tuple) -> tuple:
    """The moments of two parts' concatenation, ``a`` then ``b`` (Chan et al.)."""
    n_a, mean_a, m2_a = a
    n_b, mean_b, m2_b = b
    total = n_a + n_b
    delta = mean_b - mean_a
    return total, mean_a + delta * n_b / total, m2_a + m2_b + np.square(delta) * n_a * n_b / total


class ObsNormalizer:
    """``x -> clip((x - mean) / sqrt(var + epsilon), -clip, clip)`` with running statistics.

    Args:
        obs_dim: width of one observation.
        clip: bound of the normalized values (VecNormalize's ``clip_obs``).
        epsilon: added to the variance (VecNormalize's).
    """

    def __init__(self, obs_dim: int, clip: float = 10.0, epsilon: float = 1e-8):
        self.obs_dim, self.clip, self.epsilon = int(obs_dim), float(clip), float(epsilon)
        self.mean = np.zeros(self.obs_dim)
        self.var = np.ones(self.obs_dim)
        self.count = 1e-4

    def __repr__(self) -> str:
        return f"ObsNormalizer(obs_dim={self.obs_dim}, count={self.count:g})"

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """(N, D) observations -> (N, D) float64, normalized."""
        z = (np.asarray(x, dtype=np.float64) - self.mean) / np.sqrt(self.var + self.epsilon)
        return np.clip(z, -self.clip, self.clip)

    def update(self, parts) -> None:
        """Take in the :func:`obs_moments` of a batch's parts, pooled in the order given."""
        total = (self.count, self.mean, self.var * self.count)
        for part in parts:
            if part[0]:
                total = pool(total, part)
        self.count, self.mean, m2 = total
        self.var = m2 / self.count

    def state(self) -> dict[str, np.ndarray]:
        """The statistics as arrays: ``obs_mean`` (D,), ``obs_var`` (D,), ``obs_count`` ()."""
        return {
            "obs_mean": self.mean.copy(),
            "obs_var": self.var.copy(),
            "obs_count": np.float64(self.count),
        }

    def set_state(self, state: dict) -> None:
        """Restore :meth:`state`'s arrays; ValueError (nothing changed) if they do not fit."""
        missing = [k for k in KEYS if k not in state]
        if missing:
            raise ValueError(f"observation statistics are missing {missing}")
        mean = np.asarray(state["obs_mean"], dtype=np.float64)
        var = np.asarray(state["obs_var"], dtype=np.float64)
        count = np.asarray(state["obs_count"], dtype=np.float64)
        if mean.shape != (self.obs_dim,) or var.shape != (self.obs_dim,) or count.shape != ():
            raise ValueError(
                f"observation statistics have shapes {mean.shape}, {var.shape}, {count.shape}; "
                f"expected ({self.obs_dim},), ({self.obs_dim},), ()"
            )
        finite = np.all(np.isfinite(mean)) and np.all(np.isfinite(var)) and np.isfinite(count)
        if not finite or np.any(var < 0) or count <= 0:
            raise ValueError("observation statistics are not finite, or a variance or count <= 0")
        self.mean, self.var, self.count = mean.copy(), var.copy(), float(count)
