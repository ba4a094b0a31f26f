"""Gradient checks shared by the tests: central finite differences and a relative error."""

import numpy as np


def finite_differences(loss, weights, eps=1e-6):
    """d loss / d w for every entry of every array in ``weights`` (a dict of float64 arrays),
    by central differences (loss(w + eps) - loss(w - eps)) / (2 eps)."""
    grads = {}
    for name, w in weights.items():
        g = np.zeros_like(w)
        for idx in np.ndindex(w.shape):
            plus = {k: v.copy() for k, v in weights.items()}
            minus = {k: v.copy() for k, v in weights.items()}
            plus[name][idx] += eps
            minus[name][idx] -= eps
            g[idx] = (loss(plus) - loss(minus)) / (2 * eps)
        grads[name] = g
    return grads


def rel_err(a, b):
    """Norm-wise relative error max|a - b| / max(|a|, |b|); 0 when both are exactly zero."""
    scale = max(np.max(np.abs(a)), np.max(np.abs(b)))
    diff = np.max(np.abs(a - b))
    return 0.0 if diff == 0 else diff / scale
