"""What a REINFORCE update needs from each env slot's episodes, computed where they were played.

A batch's gradient is a sum over its steps, so it is the sum of its slots' parts. A rollout
worker keeps its slots' episodes and gives, per slot:

1. after playing, the moments of ``x_t = G_t - V(s_t)`` (``G_t`` without a value network), of
   ``G_t`` and (``env.normalize_obs``) of the observations: the learner pools them, in slot
   order, into the batch's mean and std (and the observation statistics, after the update);
2. with that mean and std, the slot's policy gradient of ``sum_t A_t * -log pi(a_t | s_t)`` (minus
   the entropy bonus), summed over its steps, and the value fit's gradient at the weights that
   played the batch;
3. the value fit's gradient at later value weights, one call per further ``value.steps``.

The learner adds the slots' parts in slot order (:func:`add_in_order`) and takes the RMSprop
steps. Every runner (this process, worker processes, Ray actors, any count of them) computes
each slot's part from the same arrays with the same code and adds the parts in the same order,
so all give the same bits.
"""

from __future__ import annotations

import numpy as np

from pgrl.config import Config
from pgrl.normalize import obs_moments
from pgrl.returns import batch_returns, moments, standardize_advantages
from pgrl.rollout import EpisodeBatch
from pgrl.sparse import take_rows


def bootstrap_values(value, batch: EpisodeBatch, cfg: Config) -> np.ndarray | None:
    """(E,) the value after each episode's last step: ``V(s_T)`` of the state a time limit cut
    it at (``value.bootstrap``), 0 after a terminal state; None (all 0) without a value network
    or a truncated episode."""
    if value is None or not cfg.value.bootstrap or not batch.ep_truncated.any():
        return None
    return np.where(batch.ep_truncated, value.predict(batch.last_obs), 0.0)


class Slots:
    """A batch's episodes split by slot, with each slot's returns ``G`` and ``x = G - V``.

    Args:
        batch: episodes as :func:`pgrl.rollout.play_slots` gives them (``ep_env``: the slot).
        policy, value: the networks at the weights that played the batch (value: None without a
            baseline); :meth:`value_gradients` is given the value net at later weights.
        cfg: the run's config (``train.gamma``, ``reset_on_nonzero``, ``standardize``,
            ``value.bootstrap``).

    Attributes:
        moments: per slot with episodes, in slot order: ``(moments of x, moments of G, moments
            of the observations)`` (:func:`pgrl.returns.moments`; the last
            :func:`pgrl.normalize.obs_moments` of the raw observations, None without
            ``policy.obs_norm``).
    """

    def __init__(self, batch: EpisodeBatch, policy, value, cfg: Config):
        self.policy, self.value, self.cfg = policy, value, cfg
        t = cfg.train
        self.parts, self.moments = [], []
        for slot in np.unique(batch.ep_env).tolist():
            part = _Part(batch, np.flatnonzero(batch.ep_env == slot))
            bootstrap = bootstrap_values(value, part, cfg)
            g = batch_returns(part.rewards, part.ep_bounds, t.gamma, t.reset_on_nonzero, bootstrap)
            x = g if value is None else g - value.predict(part.obs)
            self.parts.append((part, g, x))
            # what the learner pools: x's for batch standardization, and with a value network
            # x's and G's for the explained variance
            pooled = t.standardize == "batch" or value is not None
            self.moments.append(
                (
                    moments(x if pooled else ()),
                    moments(g if value is not None else ()),
                    None if policy.obs_norm is None else obs_moments(part.obs),
                )
            )

    def gradients(self, center: float, scale: float) -> list[tuple[tuple, tuple | None]]:
        """Per slot: the policy's ``gradient_sums`` for ``A = (x - center) / scale`` (all 0
        where ``scale`` is 0; per episode or as they are with ``train.standardize``), and the
        value net's for targets ``G`` (None without one)."""
        mode = self.cfg.train.standardize
        out = []
        for part, g, x in self.parts:
            if mode == "batch":
                a = (x - center) / scale if scale > 0 else np.zeros_like(x)
            else:
                a = standardize_advantages(x, part.ep_bounds, mode)
            fit = None if self.value is None else self.value.gradient_sums(part.obs, g)
            out.append((self.policy.gradient_sums(part.obs, part.actions, a), fit))
        return out

    def value_gradients(self, value) -> list[tuple]:
        """Per slot: ``value.gradient_sums`` for targets ``G`` (``value``: the value net at its
        weights of the moment, this object's or a copy)."""
        return [value.gradient_sums(part.obs, g) for part, g, _ in self.parts]


def slot_obs_moments(batch: EpisodeBatch) -> list[tuple]:
    """Per slot with episodes, in slot order: :func:`pgrl.normalize.obs_moments` of its raw
    observations (what :class:`Slots` gives as the last of its moments)."""
    slots = np.unique(batch.ep_env).tolist()
    return [obs_moments(_Part(batch, np.flatnonzero(batch.ep_env == s)).obs) for s in slots]


class _Part:
    """The rows of some episodes of a batch (views where they are one block of rows)."""

    def __init__(self, batch: EpisodeBatch, episodes: np.ndarray):
        b = batch.ep_bounds
        lengths = b[episodes + 1] - b[episodes]
        self.ep_bounds = np.concatenate([[0], np.cumsum(lengths)])
        if len(episodes) == 1 or np.all(b[episodes[1:]] == b[episodes[:-1] + 1]):
            rows = slice(int(b[episodes[0]]), int(b[episodes[-1] + 1]))
            self.obs = batch.obs[rows]
        else:
            rows = np.concatenate([np.arange(b[k], b[k + 1]) for k in episodes])
            self.obs = take_rows(batch.obs, rows)
        self.actions, self.rewards = batch.actions[rows], batch.rewards[rows]
        self.ep_truncated, self.last_obs = batch.ep_truncated[episodes], batch.last_obs[episodes]


def add_in_order(parts: list[tuple[dict, dict]]) -> tuple[dict, dict]:
    """``(grads, sums)``: the parts' gradients and sums added one part after another, in the
    list's order (the same parts in the same order give the same bits)."""
    grads = {k: v.copy() for k, v in parts[0][0].items()}
    sums = dict(parts[0][1])
    for g, s in parts[1:]:
        for k, v in g.items():
            grads[k] += v
        for k, v in s.items():
            sums[k] += v
    return grads, sums
