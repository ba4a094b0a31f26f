"""RMSprop and global-norm clipping: one backend-neutral description and their NumPy steps.

Both epsilon placements are supported because they are the second most common reason a NumPy
and a TensorFlow port of the same agent disagree (DESIGN.md, cause 2):

- Karpathy's gist (the default): ``theta -= lr * g / (sqrt(v) + eps)``
- Keras and TF's kernel (``epsilon_inside_sqrt=True``): ``theta -= lr * g / sqrt(v + eps)``

with ``v <- decay * v + (1 - decay) * g**2`` in both.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pgrl import validate as valid


@dataclass(frozen=True)
class RMSprop:
    """RMSprop hyperparameters; defaults are Karpathy's (1e-4, 0.99, 1e-5, eps outside sqrt).

    Args:
        learning_rate: step size, > 0.
        decay: discount of the running mean of squared gradients (Keras calls it ``rho``),
            in [0, 1).
        epsilon: denominator guard, > 0.
        epsilon_inside_sqrt: ``sqrt(v + eps)`` (Keras) instead of ``sqrt(v) + eps`` (Karpathy).
    """

    learning_rate: float = 1e-4
    decay: float = 0.99
    epsilon: float = 1e-5
    epsilon_inside_sqrt: bool = False

    def __post_init__(self):
        for name in ("learning_rate", "decay", "epsilon"):
            check = getattr(valid, name)
            object.__setattr__(self, name, check(f"RMSprop {name}", getattr(self, name)))
        if not isinstance(self.epsilon_inside_sqrt, bool):
            valid.fail("RMSprop epsilon_inside_sqrt", self.epsilon_inside_sqrt, "true or false")

    def init_state(self, params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Zero running mean of squared gradients, one array per parameter (as the gist)."""
        return {name: np.zeros_like(p) for name, p in params.items()}

    def step(
        self,
        params: dict[str, np.ndarray],
        grads: dict[str, np.ndarray],
        cache: dict[str, np.ndarray],
    ) -> None:
        """One descent step on ``params``, in place; ``cache`` (the ``v`` arrays) too."""
        # Operation order mirrors Keras's RMSprop.update_step so float64 results agree bit for bit
        # in practice: v = decay*v + (1-decay)*square(g); theta -= (lr*g) / denom.
        for name, g in grads.items():
            v = cache[name]
            v *= self.decay
            v += (1.0 - self.decay) * np.square(g)
            if self.epsilon_inside_sqrt:
                denom = np.sqrt(v + self.epsilon)
            else:
                denom = np.sqrt(v) + self.epsilon
            params[name] -= self.learning_rate * g / denom


def global_norm(grads: dict[str, np.ndarray]) -> float:
    """``sqrt(sum of every squared entry)`` over all arrays of ``grads``."""
    return float(np.sqrt(sum(np.sum(np.square(g)) for g in grads.values())))


def clip_by_global_norm(
    grads: dict[str, np.ndarray], max_norm: float | None
) -> tuple[dict[str, np.ndarray], float]:
    """``(g * c / max(norm, c) for each g, norm)``, with ``norm`` :func:`global_norm` and ``c``
    ``max_norm`` (the rule of ``tf.clip_by_global_norm``). Gradients whose norm is at most ``c``
    come back bit for bit (the scale is exactly ``c / c = 1``); ``max_norm=None`` returns them
    as they are."""
    norm = global_norm(grads)
    if max_norm is None:
        return grads, norm
    scale = max_norm / max(norm, max_norm)
    return {name: g * scale for name, g in grads.items()}, norm
