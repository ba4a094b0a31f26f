"""Discounted returns and their standardization: the math shared by every backend."""

from __future__ import annotations

import numpy as np


def discount_rewards(
    rewards, gamma: float, reset_on_nonzero: bool = False, bootstrap: float = 0.0
) -> np.ndarray:
    """Discounted returns of one episode: ``G_t = r_t + gamma * G_{t+1}``, ``G_T = bootstrap``.

    Args:
        rewards: 1-D sequence of per-step rewards ``r_t`` of one episode, shape (T,).
        gamma: discount factor in [0, 1].
        reset_on_nonzero: restart the running sum at every nonzero reward. Karpathy's Pong
            trick: a nonzero reward ends a point (a "game boundary"), so rewards of the next
            point must not leak into the returns of the previous one.
        bootstrap: the return after the last step: 0 for an episode that ended in a terminal
            state, an estimate ``V(s_T)`` for one cut short by a time limit.

    Returns:
        float64 array of shape (T,).
    """
    r = np.asarray(rewards, dtype=np.float64)
    if r.ndim != 1:
        raise ValueError(f"rewards must be 1-D (one episode), got shape {r.shape}")
    if not np.all(np.isfinite(r)):
        raise ValueError("rewards must be finite, got NaN or inf")
    gamma = float(gamma)
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must be in [0, 1], got {gamma}")
    bootstrap = float(bootstrap)
    if not np.isfinite(bootstrap):
        raise ValueError(f"bootstrap must be finite, got {bootstrap}")
    returns = np.empty_like(r)
    running = bootstrap
    for t in range(r.size - 1, -1, -1):
        if reset_on_nonzero and r[t] != 0:
            running = 0.0
        running = running * gamma + r[t]
        returns[t] = running
    return returns


def standardize(x) -> np.ndarray:
    """``(x - mean) / std`` over the whole array, shape kept; all zeros when ``std == 0``.

    A constant input (every return equal, e.g. a batch where nothing happened) carries no
    signal about which actions were better, so its advantages are zero rather than NaN.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.size == 0 or np.all(x == x.flat[0]):
        return np.zeros_like(x)
    centered = x - x.mean()
    return centered / centered.std()


def batch_returns(
    rewards: np.ndarray,
    ep_bounds: np.ndarray,
    gamma: float,
    reset_on_nonzero: bool,
    bootstrap: np.ndarray | None = None,
) -> np.ndarray:
    """Discounted returns of a batch of episodes stacked in time.

    Args:
        rewards: (T,) rewards; episode k is ``rewards[ep_bounds[k]:ep_bounds[k + 1]]``.
        ep_bounds: (E + 1,) offsets of the episodes.
        gamma, reset_on_nonzero: as :func:`discount_rewards`.
        bootstrap: (E,) the return after each episode's last step (None: all 0).

    Returns:
        float64 array of shape (T,).
    """
    n = len(ep_bounds) - 1
    bootstrap = np.zeros(n) if bootstrap is None else np.asarray(bootstrap, dtype=np.float64)
    if bootstrap.shape != (n,):
        raise ValueError(f"bootstrap must have shape ({n},), one per episode: {bootstrap.shape}")
    returns = np.empty(len(rewards), dtype=np.float64)
    for k, (start, stop) in enumerate(zip(ep_bounds[:-1], ep_bounds[1:], strict=True)):
        returns[start:stop] = discount_rewards(
            rewards[start:stop], gamma, reset_on_nonzero, bootstrap[k]
        )
    return returns


def gae(
    rewards: np.ndarray,
    values: np.ndarray,
    ep_bounds: np.ndarray,
    gamma: float,
    lam: float,
    bootstrap: np.ndarray | None = None,
    reset_on_nonzero: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Generalized advantage estimates GAE(lambda) of a batch of episodes, and value targets.

    Within an episode ``delta_t = r_t + gamma * V(s_{t+1}) - V(s_t)``, with ``V(s_T)`` after the
    last step the episode's ``bootstrap``; ``A_t = sum_k (gamma * lam)^k delta_{t+k}``; the
    targets are ``A_t + V(s_t)``. ``lam = 1`` gives ``G_t - V(s_t)``, ``lam = 0`` the one-step
    TD error.

    Args:
        rewards: (T,) rewards; episode k is ``rewards[ep_bounds[k]:ep_bounds[k + 1]]``.
        values: (T,) ``V(s_t)`` of the states the actions were taken in.
        ep_bounds: (E + 1,) offsets of the episodes.
        gamma: discount in [0, 1]; lam: GAE's lambda in [0, 1].
        bootstrap: (E,) ``V(s_T)`` after each episode's last step: 0 where it terminated,
            the value of its final observation where a time limit cut it (None: all 0).
        reset_on_nonzero: a nonzero reward ends a point (Pong), as a terminal state would:
            nothing after it flows back.

    Returns:
        ``(advantages, targets)``, float64 (T,) each.
    """
    r = np.asarray(rewards, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    if r.ndim != 1 or v.shape != r.shape:
        raise ValueError(f"rewards and values must be 1-D of one length, got {r.shape}, {v.shape}")
    if not (np.all(np.isfinite(r)) and np.all(np.isfinite(v))):
        raise ValueError("rewards and values must be finite, got NaN or inf")
    for name, x in (("gamma", gamma), ("lam", lam)):
        if not 0.0 <= float(x) <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {x}")
    n = len(ep_bounds) - 1
    bootstrap = np.zeros(n) if bootstrap is None else np.asarray(bootstrap, dtype=np.float64)
    if bootstrap.shape != (n,) or not np.all(np.isfinite(bootstrap)):
        raise ValueError(f"bootstrap must be ({n},) finite values, one per episode")
    advantages = np.empty_like(r)
    for k, (start, stop) in enumerate(zip(ep_bounds[:-1], ep_bounds[1:], strict=True)):
        next_value, running = bootstrap[k], 0.0
        for t in range(stop - 1, start - 1, -1):
            if reset_on_nonzero and r[t] != 0:
                next_value, running = 0.0, 0.0
            delta = r[t] + gamma * next_value - v[t]
            running = delta + gamma * lam * running
            advantages[t] = running
            next_value = v[t]
    return advantages, advantages + v


def standardize_advantages(advantages: np.ndarray, ep_bounds: np.ndarray, mode: str) -> np.ndarray:
    """(T,) advantages standardized per episode (``"episode"``, Karpathy's), over the batch
    (``"batch"``) or left as they are (``"none"``); float64 (T,)."""
    out = np.asarray(advantages, dtype=np.float64)
    if mode == "batch":
        return standardize(out)
    if mode == "episode":
        out = out.copy()
        for start, stop in zip(ep_bounds[:-1], ep_bounds[1:], strict=True):
            out[start:stop] = standardize(out[start:stop])
    return out


def compute_advantages(
    rewards: np.ndarray,
    ep_bounds: np.ndarray,
    gamma: float,
    reset_on_nonzero: bool,
    mode: str,
    values: np.ndarray | None = None,
) -> np.ndarray:
    """Each step's advantage: its discounted return ``G_t``, minus the baseline ``V(s_t)`` when
    ``values`` are given, standardized as ``mode`` says.

    Args:
        rewards: (T,) rewards of a batch of episodes stacked in time.
        ep_bounds: (E + 1,) offsets: episode k is ``rewards[ep_bounds[k]:ep_bounds[k + 1]]``.
        gamma, reset_on_nonzero: as :func:`discount_rewards`.
        mode: ``"episode"`` (Karpathy's), ``"batch"`` or ``"none"`` (raw).
        values: (T,) baseline ``V(s_t)``, or None (Karpathy's: no baseline).

    Returns:
        float64 array of shape (T,).
    """
    returns = batch_returns(rewards, ep_bounds, gamma, reset_on_nonzero)
    return standardize_advantages(returns if values is None else returns - values, ep_bounds, mode)


def moments(x) -> tuple[int, float, float, float, float]:
    """``(n, mean, m2, min, max)`` of a 1-D array, ``m2 = sum (x - mean)^2``: what
    :func:`pool_moments` pools across the parts of a batch."""
    x = np.asarray(x, dtype=np.float64)
    if x.size == 0:
        return 0, 0.0, 0.0, np.inf, -np.inf
    mean = float(np.mean(x))
    return int(x.size), mean, float(np.sum((x - mean) ** 2)), float(x.min()), float(x.max())


def pool_moments(parts) -> tuple[int, float, float, float, float]:
    """The :func:`moments` of the parts' concatenation, pooled in the order given (Chan, Golub
    and LeVeque's update), so the same parts in the same order give the same bits."""
    n, mean, m2, lo, hi = 0, 0.0, 0.0, np.inf, -np.inf
    for n_b, mean_b, m2_b, lo_b, hi_b in parts:
        if n_b == 0:
            continue
        total = n + n_b
        delta = mean_b - mean
        mean += delta * n_b / total
        m2 += m2_b + delta * delta * n * n_b / total
        n, lo, hi = total, min(lo, lo_b), max(hi, hi_b)
    return n, mean, m2, lo, hi


def center_and_scale(pooled) -> tuple[float, float]:
    """``(mean, std)`` of pooled moments for :func:`standardize`'s rule, ``(0, 0)`` for a
    constant input (its advantages are all zero)."""
    n, mean, m2, lo, hi = pooled
    if n == 0 or lo == hi:
        return 0.0, 0.0
    return mean, float(np.sqrt(m2 / n))


def explained_variance(values: np.ndarray, returns: np.ndarray) -> float:
    """``1 - Var(G - V) / Var(G)``: 1 when ``V`` predicts the returns exactly, 0 when it does no
    better than their mean, negative when worse; NaN when the returns are constant."""
    returns = np.asarray(returns, dtype=np.float64)
    residual = returns - np.asarray(values, dtype=np.float64)
    return pooled_explained_variance([(moments(residual), moments(returns))])


def pooled_explained_variance(parts) -> float:
    """:func:`explained_variance` of a batch from its parts' ``(moments of G - V, moments of
    G)``, pooled in the order given."""
    parts = list(parts)
    residual = pool_moments(r for r, _ in parts)
    returns = pool_moments(g for _, g in parts)
    if returns[0] == 0 or returns[3] == returns[4]:
        return float("nan")
    return float(1 - residual[2] / returns[2])
