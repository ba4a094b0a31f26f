"""The hand-written NumPy backend: forward, backward, clipping and RMSprop with no framework."""

from __future__ import annotations

import numpy as np

from pgrl.optim import clip_by_global_norm
from pgrl.policies.base import Policy, ValueNet
from pgrl.sparse import SPARSE_DENSITY, SparseRows


def sigmoid(z: np.ndarray) -> np.ndarray:
    """Logistic function without overflow, to the last bit: ``exp`` only ever sees ``-|z|``.

    ``1 / (1 + e)`` where ``z >= 0`` and ``e / (1 + e)`` elsewhere, with ``e = exp(-|z|)``. (The
    shorter ``exp(-softplus(-z))`` loses ``|z|`` ulps where the logit saturates: too much for
    float32 parity with TensorFlow.)
    """
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0, e) / (1.0 + e)


def softplus(z: np.ndarray) -> np.ndarray:
    """``log(1 + exp(z))`` without overflow."""
    return np.logaddexp(0.0, z)


def log_softmax(z: np.ndarray) -> np.ndarray:
    """(N, n) logits -> (N, n) ``log softmax(z)``, finite for any finite ``z``: the row maximum
    is subtracted before ``exp``, so ``exp`` never overflows and the sum is at least 1."""
    shifted = z - np.max(z, axis=1, keepdims=True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=1, keepdims=True))


def softmax(z: np.ndarray) -> np.ndarray:
    """(N, n) logits -> (N, n) probabilities, rows summing to 1 (max-shifted, as log_softmax)."""
    e = np.exp(z - np.max(z, axis=1, keepdims=True))
    return e / np.sum(e, axis=1, keepdims=True)


def entropy(z: np.ndarray) -> np.ndarray:
    """Entropy (nats) of the policy at each step: (N,) Bernoulli logits or (N, n) categorical
    logits -> (N,).

    Bernoulli: ``p * BCE(1, z) + (1 - p) * BCE(0, z)`` with ``BCE(1, z) = softplus(-z)`` and
    ``1 - p = sigmoid(-z)``;
    categorical: ``-sum_k pi_k log pi_k``. Finite for any finite logits.
    """
    if z.ndim == 1:
        p = sigmoid(z)
        return p * softplus(-z) + sigmoid(-z) * softplus(z)  # 1 - p would round to 0
    return -np.sum(softmax(z) * log_softmax(z), axis=1)


def entropy_grad(z: np.ndarray) -> np.ndarray:
    """``dH/dz`` of :func:`entropy`, the shape of ``z``.

    Bernoulli: ``-z p (1 - p)`` (``log((1 - p) / p) = -z``); categorical:
    ``-pi_j (log pi_j + H)``.
    """
    if z.ndim == 1:
        return -z * sigmoid(z) * sigmoid(-z)
    pi, log_pi = softmax(z), log_softmax(z)
    h = -np.sum(pi * log_pi, axis=1, keepdims=True)
    return -pi * (log_pi + h)


def _matmul(h, w: np.ndarray) -> np.ndarray:
    """``h @ w`` for dense floats or SparseRows."""
    return h.matmul(w) if isinstance(h, SparseRows) else h @ w


class NumpyNetwork:
    """The MLP machinery both NumPy networks share: weights, forward, backward, RMSprop.

    Mixed into a :class:`pgrl.policies.base.Network` subclass, whose ``__init__`` runs first and
    then calls :meth:`_init_numpy`.
    """

    def _init_numpy(self) -> None:
        self.params = self.initial_weights()
        self.cache = self.optimizer.init_state(self.params)
        self.step = 0
        # (weight name, bias name or None) of each layer, first to last
        self._layer_names = [
            (f"W{i}", f"b{i}" if self.bias else None) for i in range(1, len(self.hidden_sizes) + 2)
        ]

    def _first_input(self, x):
        """Mostly-zero integer rows (Pong's frame differences) as SparseRows, other integer
        rows as floats of the network's dtype, floats as they are."""
        if isinstance(x, SparseRows) or x.dtype.kind not in "iu":
            return x
        sparse = SparseRows.from_dense(x)
        return sparse if sparse.nnz <= SPARSE_DENSITY * x.size else x.astype(self.dtype)

    def _mlp(self, x) -> tuple[list, np.ndarray]:
        """Activations ``[h_0 = x, h_1, ..., h_L]`` and outputs (N, n_outputs).

        Hidden layers ``h_i = relu(h_{i-1} @ W_i + b_i)``; outputs ``h_L @ W_n + b_n``. ``x`` is
        (N, obs_dim), dense or :class:`SparseRows`; a sparse ``x @ W1`` reads only the rows of
        W1 that its nonzeros select (a Pong frame difference has ~25 of 6400).
        """
        params, (*hidden, (w_out, b_out)) = self.params, self._layer_names
        h = self._first_input(x)
        hs = [h]
        for w, b in hidden:
            a = _matmul(h, params[w])
            if b is not None:
                a += params[b]
            h = np.maximum(a, 0.0, out=a)
            hs.append(h)
        out = _matmul(h, params[w_out])
        return hs, out if b_out is None else out + params[b_out]

    def _backprop(self, hs: list, dout: np.ndarray) -> dict[str, np.ndarray]:
        """Gradients of every parameter from ``dout = dL/d(outputs)`` (N, n_outputs)."""
        grads, dh = {}, dout
        for i in range(len(hs), 0, -1):
            h = hs[i - 1]
            if isinstance(h, SparseRows):
                grads[f"W{i}"] = h.rmatmul(dh)
            else:
                grads[f"W{i}"] = h.T @ dh
            if self.bias:
                grads[f"b{i}"] = dh.sum(axis=0)
            if i > 1:
                dh = dh @ self.params[f"W{i}"].T
                # h == 0 exactly where the pre-activation was <= 0 (DESIGN.md, cause 4).
                dh[hs[i - 1] <= 0] = 0
        return {name: grads[name] for name in self.shapes}

    def _step(self, grads: dict[str, np.ndarray]) -> float:
        """Clip (``max_grad_norm``), then one RMSprop step; returns the norm before clipping."""
        grads, norm = clip_by_global_norm(grads, self.max_grad_norm)
        self.optimizer.step(self.params, grads, self.cache)
        self.step += 1
        return norm

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
    """Karpathy's policy network in NumPy; see :class:`pgrl.policies.base.Policy` for arguments.

    Logits ``z = h_L @ W_n + b_n`` of the MLP (:meth:`NumpyNetwork._mlp`); ``p = sigmoid(z)``
    (Bernoulli head) or ``pi = softmax(z)`` (categorical head).
    """

    backend = "numpy"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_numpy()

    def _forward(self, x) -> tuple[list, np.ndarray]:
        """Activations and logits ``z``: (N,) for the Bernoulli head, (N, n_actions) for the
        categorical one."""
        hs, z = self._mlp(x)
        return hs, z[:, 0] if self.head == "bernoulli" else z

    def _backward(self, hs, z, actions, advantages) -> dict[str, np.ndarray]:
        """Gradients of ``L = sum_t A_t * CE(a_t, z_t) - c * sum_t H_t`` (the "PG magic" and the
        entropy bonus)."""
        if self.head == "bernoulli":
            # dBCE(y, z)/dz = sigmoid(z) - y  (DESIGN.md, cause 1: the derivative is taken through
            # the sigmoid, not of the logit itself). For y = 1 it is written -sigmoid(-z), which
            # keeps full relative precision when p rounds to 1.
            dz = advantages * np.where(actions == 1, -sigmoid(-z), sigmoid(z))
        else:
            # dCE(a, z)/dz = softmax(z) - onehot(a), the categorical form of sigmoid(z) - y
            dz = softmax(z)
            dz[np.arange(len(actions)), actions] -= 1
            dz *= advantages[:, None]
        if self.entropy_coef:
            dz -= self.entropy_coef * entropy_grad(z)
        if self.reduction == "mean":
            dz /= z.shape[0]
        return self._backprop(hs, dz[:, None] if self.head == "bernoulli" else dz)

    def _logits(self, obs):
        return self._forward(obs)[1]

    def _action_prob(self, obs):
        return sigmoid(self._forward(obs)[1])

    def _action_probs(self, obs):
        return softmax(self._forward(obs)[1])

    def _loss(self, obs, actions, advantages):
        return self._loss_of(self._forward(obs)[1], actions, advantages)

    def _loss_of(self, z, actions, advantages) -> float:
        loss = _loss(z, actions, advantages, self.reduction)
        if self.entropy_coef:
            bonus = np.sum(entropy(z))
            loss -= self.entropy_coef * (bonus / z.shape[0] if self.reduction == "mean" else bonus)
        return float(loss)

    def _gradients(self, obs, actions, advantages):
        hs, z = self._forward(obs)
        return self._backward(hs, z, actions, advantages)

    def _update(self, obs, actions, advantages):
        hs, z = self._forward(obs)
        grads = self._backward(hs, z, actions, advantages)
        if self.head == "bernoulli":
            mean_prob = np.mean(sigmoid(z))
        else:
            mean_prob = np.mean(softmax(z)[np.arange(len(actions)), actions])
        stats = {
            "loss": self._loss_of(z, actions, advantages),
            "grad_norm": self._step(grads),
            "mean_prob": float(mean_prob),
            "entropy": float(np.mean(entropy(z))),
        }
        return stats


class NumpyValueNet(NumpyNetwork, ValueNet):
    """A value network ``V(s)`` in NumPy; see :class:`pgrl.policies.base.ValueNet`."""

    backend = "numpy"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_numpy()

    def _predict(self, obs):
        return self._mlp(obs)[1][:, 0]

    def _loss(self, obs, returns):
        return self._loss_of(self._predict(obs), returns)

    def _loss_of(self, v, returns) -> float:
        loss = 0.5 * np.sum(np.square(v - returns))
        return float(loss / len(v) if self.reduction == "mean" else loss)

    def _backward(self, hs, v, returns):
        dv = v - returns  # d(0.5 (v - G)^2)/dv
        if self.reduction == "mean":
            dv /= len(v)
        return self._backprop(hs, dv[:, None])

    def _gradients(self, obs, returns):
        hs, out = self._mlp(obs)
        return self._backward(hs, out[:, 0], returns)

    def _update(self, obs, returns):
        hs, out = self._mlp(obs)
        v = out[:, 0]
        loss = self._loss_of(v, returns)
        return {"value_loss": loss, "value_grad_norm": self._step(self._backward(hs, v, returns))}


def _loss(z, actions, advantages, reduction: str) -> float:
    """``sum_t A_t * BCE(a_t, z_t)`` for (N,) logits, with BCE(1, z) = softplus(-z), or
    ``sum_t A_t * CE(a_t, z_t)`` for (N, n) logits, ``CE = -log_softmax(z)[a]`` (divided by N for
    ``"mean"``)."""
    if z.ndim == 1:
        ce = np.where(actions == 1, softplus(-z), softplus(z))
    else:
        ce = -log_softmax(z)[np.arange(len(actions)), actions]
    loss = float(np.sum(advantages * ce))
    return loss / z.shape[0] if reduction == "mean" else loss
