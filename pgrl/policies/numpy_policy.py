"""The hand-written NumPy backend: the network of :mod:`pgrl.nn`, the head's distribution, the
objective, clipping and RMSprop, with no framework."""

from __future__ import annotations

import numpy as np

from pgrl import nn, objectives
from pgrl.optim import clip_by_global_norm
from pgrl.policies.base import Policy, ValueNet


class NumpyNetwork:
    """What both NumPy networks share: weights, RMSprop state and step.

    Mixed into a :class:`pgrl.policies.base.Network` subclass, whose ``__init__`` runs first.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.params = self.initial_weights()
        self.cache = self.optimizer.init_state(self.params)
        self.step = 0

    def _step(self, grads: dict[str, np.ndarray]) -> float:
        """Clip (``max_grad_norm``), then one RMSprop step; returns the norm before clipping."""
        grads, norm = clip_by_global_norm(grads, self.max_grad_norm)
        self.optimizer.step(self.params, grads, self.cache)
        self.step += 1
        return norm

    def _forward(self, obs) -> tuple[list, np.ndarray]:
        """Activations and outputs (N, k) (:func:`pgrl.nn.forward`)."""
        return nn.forward(self.params, obs)

    def _backward(self, hs: list, dout: np.ndarray) -> dict[str, np.ndarray]:
        """``dL/d(every parameter)`` from ``dL/d(outputs)`` (:func:`pgrl.nn.backward`)."""
        return nn.backward(self.params, hs, dout)

    def _outputs(self, obs):
        return self._forward(obs)[1]

    def _loss(self, obs, *targets):
        return self._loss_and_dout(self._outputs(obs), *targets)[0]

    def _loss_and_dout(self, out, *targets) -> tuple[float, np.ndarray]:
        """``L`` and ``dL/d(out)``, divided by N with ``reduction="mean"``."""
        loss, dout = self._sum_loss_and_dout(out, *targets)
        if self.reduction == "mean":
            n = out.shape[0]
            loss, dout = loss / n, dout / n
        return loss, dout

    def _gradient_sums(self, obs, *targets):
        hs, out = self._forward(obs)
        loss, dout = self._sum_loss_and_dout(out, *targets)
        return self._backward(hs, dout), loss, out

    def _gradients(self, obs, *targets):
        hs, out = self._forward(obs)
        return self._backward(hs, self._loss_and_dout(out, *targets)[1])

    def _get_weights(self):
        return {name: w.copy() for name, w in self.params.items()}

    def _set_weights(self, weights):
        self.params = weights

    def _apply_gradients(self, grads):
        self._step(grads)

    def _get_optimizer_state(self):
        state = {f"v_{name}": v.copy() for name, v in self.cache.items()}
        state["step"] = np.int64(self.step)
        return state

    def _set_optimizer_state(self, velocities, step):
        self.cache = velocities
        self.step = step


class NumpyPolicy(NumpyNetwork, Policy):
    """Karpathy's policy network in NumPy; see :class:`pgrl.policies.base.Policy` for arguments."""

    backend = "numpy"

    def _forward(self, obs):
        return nn.head_forward(self.distribution, self.params, obs)

    def _backward(self, hs, dout):
        return nn.head_backward(self.distribution, self.params, hs, dout)

    def _probs(self, obs):
        dist = self.distribution
        return dist.probs(dist.logits(self._outputs(obs)))

    def _log_probs(self, obs, actions):
        dist = self.distribution
        return dist.log_prob(dist.logits(self._outputs(obs)), actions)

    def _sum_loss_and_dout(
        self, out, actions, advantages, old_log_probs=None, clip=None
    ) -> tuple[float, np.ndarray]:
        """``L`` summed over the steps and ``dL/d(out)`` (N, k): the chain rule through the
        objective's ``dL/dlogp`` (REINFORCE's, or PPO's surrogate with ``old_log_probs``) and
        the entropy bonus's ``dL/dH = -c`` (the "PG magic")."""
        dist, c = self.distribution, self.entropy_coef
        z = dist.logits(out)
        log_probs = dist.log_prob(z, actions)
        if old_log_probs is None:
            terms, dlogp = objectives.reinforce(log_probs, advantages)
        else:
            terms, dlogp = objectives.ppo(log_probs, advantages, old_log_probs, clip)
        loss = float(np.sum(terms))
        dz = objectives.chain(dlogp, dist.dlog_prob(z, actions))
        if c:
            loss -= c * float(np.sum(dist.entropy(z)))
            dz += -c * dist.dentropy(z)
        return loss, dz.reshape(out.shape)

    def _update(self, obs, actions, advantages, old_log_probs=None, clip=None):
        hs, out = self._forward(obs)
        loss, dout = self._loss_and_dout(out, actions, advantages, old_log_probs, clip)
        dist = self.distribution
        z = dist.logits(out)
        stats = {
            "loss": loss,
            "grad_norm": self._step(self._backward(hs, dout)),
            "mean_prob": dist.prob_stat(z, actions),
            "entropy": float(np.mean(dist.entropy(z))),
        }
        if old_log_probs is not None:
            stats.update(objectives.ppo_stats(dist.log_prob(z, actions), old_log_probs, clip))
        return stats


class NumpyValueNet(NumpyNetwork, ValueNet):
    """A value network ``V(s)`` in NumPy; see :class:`pgrl.policies.base.ValueNet`."""

    backend = "numpy"

    def _sum_loss_and_dout(
        self, out, returns, old_values=None, clip=None
    ) -> tuple[float, np.ndarray]:
        """``L`` summed over the steps and ``dL/d(out)`` (N, 1) of the value fit (PPO's clipped
        one with ``old_values``)."""
        if old_values is None:
            terms, dv = objectives.value_loss(out[:, 0], returns)
        else:
            terms, dv = objectives.clipped_value_loss(out[:, 0], returns, old_values, clip)
        return float(np.sum(terms)), dv[:, None]

    def _update(self, obs, *targets):
        hs, out = self._forward(obs)
        loss, dout = self._loss_and_dout(out, *targets)
        return {
            "value_loss": loss,
            "value_grad_norm": self._step(self._backward(hs, dout)),
        }
