"""The hand-written NumPy backend: forward, backward and RMSprop with no framework."""

from __future__ import annotations

import numpy as np

from pgrl.policies.base import Policy, init_weights
from pgrl.sparse import SparseRows, is_mostly_zero

# Up to this many integer rows (one per env during a rollout) are multiplied row by row,
# gathering the rows of W1 that each one's nonzeros select: no CSR is built.
FEW_ROWS = 8


def sigmoid(z: np.ndarray) -> np.ndarray:
    """Logistic function without overflow: ``exp`` only ever sees ``-|z|``.

    ``1 / (1 + e)`` where ``z >= 0`` and ``e / (1 + e)`` elsewhere, with ``e = exp(-|z|)``.
    """
    if isinstance(z, np.ndarray) and z.shape == (1,) and z.dtype == np.float64:
        # A rollout step on one env: the same formula on Python floats (~0.7 us instead of
        # ~2 us). Python's float arithmetic is IEEE float64, and np.exp of a float runs the loop
        # it runs on a one-element array, so the bits are those of the array formula on z
        # (tests/test_policies.py). Longer arrays may take a SIMD exp with other last bits on
        # some NumPy builds, as they would without this branch.
        zf = float(z[0])
        e = float(np.exp(-abs(zf)))
        return np.array([1.0 / (1.0 + e) if zf >= 0 else e / (1.0 + e)])
    e = np.exp(-np.abs(z))
    if e.shape == (1,):  # one float32 row: a branch instead of where() (-3 us)
        return 1.0 / (1.0 + e) if z[0] >= 0 else e / (1.0 + e)
    return np.where(z >= 0, 1.0, e) / (1.0 + e)


def softplus(z: np.ndarray) -> np.ndarray:
    """``log(1 + exp(z))`` without overflow."""
    return np.logaddexp(0.0, z)


def _matmul(h, w: np.ndarray) -> np.ndarray:
    """``h @ w`` for dense float, SparseRows, or a few integer rows (Pong's rollout steps).

    Dense products go through ``np.dot``: for C-contiguous 2-D operands the same BLAS call as
    ``@``, with less dispatch per call (a CartPole rollout step makes two)."""
    if isinstance(h, SparseRows):
        return h.matmul(w)
    if h.dtype.kind in "iu":
        out = np.empty((h.shape[0], w.shape[1]), dtype=w.dtype)
        for i, row in enumerate(h):
            nz = np.flatnonzero(row != 0)  # ~5x faster than on int8 directly (numpy 2.4)
            out[i] = row[nz].astype(w.dtype) @ w[nz]
        return out
    return np.dot(h, w)


class NumpyPolicy(Policy):
    """Karpathy's policy network in NumPy; see :class:`pgrl.policies.base.Policy` for arguments.

    Hidden layers ``h_i = relu(h_{i-1} @ W_i + b_i)`` with ``h_0 = obs``; logit
    ``z = h_L @ W_n + b_n``; ``p = sigmoid(z)``.
    """

    backend = "numpy"

    def __init__(
        self,
        obs_dim,
        hidden_sizes=(200,),
        optimizer=None,
        seed=0,
        dtype="float64",
        reduction="sum",
        bias=False,
    ):
        super().__init__(obs_dim, hidden_sizes, optimizer, seed, dtype, reduction, bias)
        self.params = init_weights(
            self.obs_dim, self.hidden_sizes, self.bias, seed, self.dtype.name
        )
        self.cache = self.optimizer.init_state(self.params)
        self.step = 0
        n_layers = len(self.hidden_sizes) + 1
        # (weight name, bias name or None) per layer, first to last
        self._layer_names = [
            (f"W{i}", f"b{i}" if self.bias else None) for i in range(1, n_layers + 1)
        ]

    def _first_input(self, x):
        """Sparse Pong-like inputs as SparseRows, everything else as a dense float array."""
        if isinstance(x, SparseRows):
            return x
        if x.dtype.kind in "iu":
            if x.shape[0] <= FEW_ROWS:
                return x
            if is_mostly_zero(x):
                return SparseRows.from_dense(x)
            return x.astype(self.dtype)
        return x

    def _forward(self, x) -> tuple[list, np.ndarray]:
        """Activations ``[h_0 = x, h_1, ..., h_L]`` and logits ``z`` of shape (N,).

        ``x`` is (N, obs_dim), dense or :class:`SparseRows`; a sparse ``x @ W1`` reads only the
        rows of W1 that its nonzeros select (a Pong frame difference has ~25 of 6400).
        """
        params = self.params
        *hidden, (w_out, b_out) = self._layer_names
        h = self._first_input(x)
        hs = [h]
        for w, b in hidden:
            a = _matmul(h, params[w])
            if b is not None:
                a += params[b]
            h = np.maximum(a, 0.0, out=a)
            hs.append(h)
        z = _matmul(h, params[w_out])[:, 0]
        if b_out is not None:
            z = z + params[b_out]  # (1,) broadcast: same sums as [0], one step less
        return hs, z

    def _backward(self, hs, z, actions, advantages) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Gradients of ``L = sum_t A_t * BCE(a_t, z_t)`` (the "PG magic"), and ``p``."""
        p = sigmoid(z)
        # dBCE(y, z)/dz = sigmoid(z) - y  (DESIGN.md, cause 1: the derivative is taken through the
        # sigmoid, not of the logit itself). For y = 1 it is written -sigmoid(-z), which keeps full
        # relative precision when p rounds to 1.
        dz = advantages * np.where(actions == 1, -sigmoid(-z), p)
        if self.reduction == "mean":
            dz /= z.shape[0]
        grads = {}
        n_layers = len(hs)
        dh = dz[:, None]
        for i in range(n_layers, 0, -1):
            h = hs[i - 1]
            if isinstance(h, SparseRows):
                grads[f"W{i}"] = h.rmatmul(dh)
            else:
                grads[f"W{i}"] = h.T.astype(dh.dtype) @ dh if h.dtype.kind in "iu" else h.T @ dh
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

    def _action_prob(self, obs):
        return sigmoid(self._forward(obs)[1])

    def rollout_fn(self):
        """:meth:`_action_prob` with the weights bound once and, for dense rows, without the
        generic forward's dispatch (a CartPole call: ~4 us instead of ~12-16 us for the checked
        ``action_prob``); the same operations, so the same numbers. See
        :meth:`Policy.rollout_fn`.

        The dense loop repeats :meth:`_forward`'s operations in the same order (tests/test_sparse.py
        asserts identical bits): keep the two in step. The function reads the policy's own arrays:
        an update (RMSprop steps in place) shows in it, ``set_weights`` (new arrays) does not. Take
        a new one after either."""
        params, forward = self.params, self._forward
        # Hidden biases as (1, n) views: adding one to a (1, n) row skips broadcasting (~0.5 us);
        # the sums are the same. Views, so RMSprop's in-place steps show in them.
        *hidden, (w_out, b_out) = [
            (params[w], None if b is None else params[b].reshape(1, -1))
            for w, b in self._layer_names
        ]
        if b_out is not None:
            b_out = b_out[0]  # (1,), as in _forward
        dot, maximum = np.dot, np.maximum

        def action_prob(obs: np.ndarray) -> np.ndarray:
            if obs.dtype.kind in "iu":  # frame differences: the first layer gathers rows of W1
                return sigmoid(forward(obs)[1])
            h = obs
            for w, b in hidden:
                h = dot(h, w)
                if b is not None:
                    h += b
                maximum(h, 0.0, out=h)
            z = dot(h, w_out)[:, 0]
            if b_out is not None:
                z = z + b_out
            return sigmoid(z)

        return action_prob

    def _gradients(self, obs, actions, advantages):
        hs, z = self._forward(obs)
        return self._backward(hs, z, actions, advantages)[0]

    def _apply_gradients(self, grads):
        self.optimizer.step(self.params, grads, self.cache)
        self.step += 1

    def _update(self, obs, actions, advantages):
        hs, z = self._forward(obs)
        grads, p = self._backward(hs, z, actions, advantages)
        # BCE(1, z) = softplus(-z), BCE(0, z) = softplus(z); Bernoulli entropy is their p-mixture.
        bce = np.where(actions == 1, softplus(-z), softplus(z))
        loss = np.sum(advantages * bce)
        if self.reduction == "mean":
            loss /= z.shape[0]
        stats = {
            "loss": float(loss),
            "grad_norm": float(np.sqrt(sum(np.sum(np.square(g)) for g in grads.values()))),
            "mean_prob": float(np.mean(p)),
            "entropy": float(np.mean(p * softplus(-z) + (1 - p) * softplus(z))),
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
