"""The hand-written NumPy backend: forward, backward and RMSprop with no framework."""

from __future__ import annotations

import numpy as np

from pgrl.policies.base import Policy, init_weights
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


def _matmul(h, w: np.ndarray) -> np.ndarray:
    """``h @ w`` for dense floats or SparseRows."""
    return h.matmul(w) if isinstance(h, SparseRows) else h @ w


class NumpyPolicy(Policy):
    """Karpathy's policy network in NumPy; see :class:`pgrl.policies.base.Policy` for arguments.

    Hidden layers ``h_i = relu(h_{i-1} @ W_i + b_i)`` with ``h_0 = obs``; logits
    ``z = h_L @ W_n + b_n``; ``p = sigmoid(z)`` (Bernoulli head) or ``pi = softmax(z)``
    (categorical head).
    """

    backend = "numpy"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.params = init_weights(
            self.obs_dim, self.hidden_sizes, self.bias, self.seed, self.dtype.name, self.n_logits
        )
        self.cache = self.optimizer.init_state(self.params)
        self.step = 0
        # (weight name, bias name or None) of each layer, first to last
        self._layer_names = [
            (f"W{i}", f"b{i}" if self.bias else None) for i in range(1, len(self.hidden_sizes) + 2)
        ]

    def _first_input(self, x):
        """Mostly-zero integer rows (Pong's frame differences) as SparseRows, other integer
        rows as floats of the policy's dtype, floats as they are."""
        if isinstance(x, SparseRows) or x.dtype.kind not in "iu":
            return x
        sparse = SparseRows.from_dense(x)
        return sparse if sparse.nnz <= SPARSE_DENSITY * x.size else x.astype(self.dtype)

    def _forward(self, x) -> tuple[list, np.ndarray]:
        """Activations ``[h_0 = x, h_1, ..., h_L]`` and logits ``z``: (N,) for the Bernoulli
        head, (N, n_actions) for the categorical one.

        ``x`` is (N, obs_dim), dense or :class:`SparseRows`; a sparse ``x @ W1`` reads only the
        rows of W1 that its nonzeros select (a Pong frame difference has ~25 of 6400).
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
        z = _matmul(h, params[w_out])
        if self.head == "bernoulli":
            z = z[:, 0]
        return hs, z if b_out is None else z + params[b_out]

    def _backward(self, hs, z, actions, advantages) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Gradients of ``L = sum_t A_t * BCE(a_t, z_t)`` or ``sum_t A_t * CE(a_t, z_t)`` (the
        "PG magic"), and ``p`` (N,) or ``pi`` (N, n_actions)."""
        if self.head == "bernoulli":
            p = sigmoid(z)
            # dBCE(y, z)/dz = sigmoid(z) - y  (DESIGN.md, cause 1: the derivative is taken through
            # the sigmoid, not of the logit itself). For y = 1 it is written -sigmoid(-z), which
            # keeps full relative precision when p rounds to 1.
            dz = advantages * np.where(actions == 1, -sigmoid(-z), p)
            dh = dz[:, None]
        else:
            p = softmax(z)
            # dCE(a, z)/dz = softmax(z) - onehot(a), the categorical form of sigmoid(z) - y
            dh = p.copy()
            dh[np.arange(len(actions)), actions] -= 1
            dh *= advantages[:, None]
        if self.reduction == "mean":
            dh /= z.shape[0]
        grads = {}
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
        return {name: grads[name] for name in self.shapes}, p

    def _get_weights(self):
        return {name: w.copy() for name, w in self.params.items()}

    def _set_weights(self, weights):
        self.params = weights

    def _logits(self, obs):
        return self._forward(obs)[1]

    def _action_prob(self, obs):
        return sigmoid(self._forward(obs)[1])

    def _action_probs(self, obs):
        return softmax(self._forward(obs)[1])

    def _loss(self, obs, actions, advantages):
        return _loss(self._forward(obs)[1], actions, advantages, self.reduction)

    def _gradients(self, obs, actions, advantages):
        hs, z = self._forward(obs)
        return self._backward(hs, z, actions, advantages)[0]

    def _apply_gradients(self, grads):
        self.optimizer.step(self.params, grads, self.cache)
        self.step += 1

    def _update(self, obs, actions, advantages):
        hs, z = self._forward(obs)
        grads, p = self._backward(hs, z, actions, advantages)
        if self.head == "bernoulli":
            mean_prob = np.mean(p)
            # Bernoulli entropy: the p-mixture of BCE(1, z) = softplus(-z), BCE(0, z) = softplus(z)
            entropy = np.mean(p * softplus(-z) + (1 - p) * softplus(z))
        else:
            mean_prob = np.mean(p[np.arange(len(actions)), actions])
            entropy = np.mean(-np.sum(p * log_softmax(z), axis=1))
        stats = {
            "loss": _loss(z, actions, advantages, self.reduction),
            "grad_norm": float(np.sqrt(sum(np.sum(np.square(g)) for g in grads.values()))),
            "mean_prob": float(mean_prob),
            "entropy": float(entropy),
        }
        self._apply_gradients(grads)
        return stats

    def _get_optimizer_state(self):
        state = {f"v_{name}": v.copy() for name, v in self.cache.items()}
        state["step"] = np.int64(self.step)
        return state

    def _set_optimizer_state(self, velocities, step):
        self.cache = velocities
        self.step = step


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
