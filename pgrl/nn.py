"""The NumPy network: an MLP's forward and backward pass, and the activations it needs.

The one place pgrl computes a network in NumPy: the NumPy policy and value network, ``pgrl check``
and ``pgrl diagnose`` all call it. Weights are a dict ``{"W1": (D, H1), "b1": (H1,), ...,
"Wn": (H_last, k)}`` (biases optional); hidden layers are ``h_i = relu(h_{i-1} @ W_i + b_i)``, the
last layer is linear.
"""

from __future__ import annotations

import numpy as np

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


def n_layers(weights: dict) -> int:
    """The number of weight matrices ``W1 .. Wn``."""
    return sum(name[0] == "W" for name in weights)


def _input(x, dtype):
    """Mostly-zero integer rows (Pong's frame differences) as SparseRows, other integer rows as
    floats of ``dtype``, floats and SparseRows as they are."""
    if isinstance(x, SparseRows) or x.dtype.kind not in "iu":
        return x
    sparse = SparseRows.from_dense(x)
    return sparse if sparse.nnz <= SPARSE_DENSITY * x.size else x.astype(dtype)


def forward(weights: dict, x) -> tuple[list, np.ndarray]:
    """Activations ``[h_0 = x, h_1, ..., h_L]`` and outputs (N, k).

    ``x`` is (N, D), dense or :class:`SparseRows`; a sparse ``x @ W1`` reads only the rows of W1
    that its nonzeros select (a Pong frame difference has ~25 of 6400).
    """
    n = n_layers(weights)
    h = _input(x, weights["W1"].dtype)
    hs = [h]
    for i in range(1, n + 1):
        w, b = weights[f"W{i}"], weights.get(f"b{i}")
        a = h.matmul(w) if isinstance(h, SparseRows) else h @ w
        if b is not None:
            a += b
        if i == n:
            return hs, a
        h = np.maximum(a, 0.0, out=a)
        hs.append(h)


def head_forward(head, weights: dict, x) -> tuple[list, np.ndarray]:
    """Activations and the head's input (N, k): the outputs of :func:`forward` with the head's
    own parameters (``head.outputs``: the gaussian head's ``log_std`` columns)."""
    hs, out = forward(weights, x)
    return hs, head.outputs(out, weights)


def head_backward(head, weights: dict, hs: list, dz: np.ndarray, strict_mask: bool = False):
    """``dL/d(every parameter)``, the head's own included, from ``dz = dL/d(the head's input)``
    (N,) or (N, k), in the order of ``weights``: :func:`backward` of the network's part."""
    dout, own = head.param_grads(dz.reshape(len(dz), -1))
    return {**backward(weights, hs, dout, strict_mask), **own}


def backward(weights: dict, hs: list, dout: np.ndarray, strict_mask: bool = False) -> dict:
    """``dL/dW_i`` (and ``dL/db_i``) from ``dout = dL/d(outputs)`` (N, k), in the order of
    ``weights`` (entries not of the MLP, such as a head's ``log_std``, are left out).

    The ReLU backward zeroes ``dh`` where ``h <= 0`` (DESIGN.md, cause 4); ``strict_mask`` (a
    porting mistake ``pgrl diagnose`` models) zeroes it where ``h < 0``, which after the clamp
    ``h = max(a, 0)`` is nowhere.
    """
    grads, dh = {}, dout
    for i in range(len(hs), 0, -1):
        h = hs[i - 1]
        grads[f"W{i}"] = h.rmatmul(dh) if isinstance(h, SparseRows) else h.T @ dh
        if f"b{i}" in weights:
            grads[f"b{i}"] = dh.sum(axis=0)
        if i > 1:
            dh = dh @ weights[f"W{i}"].T
            dh[(h < 0) if strict_mask else (h <= 0)] = 0
    return {name: grads[name] for name in weights if name in grads}
