"""The action distributions of the policy heads, one class per head.

Each reads the network's output ``out`` (N, k) as its parameters ``z = logits(out)`` and gives
the policy ``pi(. | s)`` from them: its probabilities, a sampled action from uniforms ``u``,
``log pi(a | s)`` and its gradient with respect to ``z``, and the entropy and its gradient. The
NumPy methods serve the NumPy backend; the ``tf_`` twins beside them are the same formulas in
TensorFlow ops (TensorFlow is imported only when one is called). No other code in pgrl branches
on the head.
"""

from __future__ import annotations

import numpy as np

from pgrl.nn import log_softmax, sigmoid, softmax, softplus


def _tf():
    """TensorFlow (imported by the TensorFlow backend before any twin runs), looked up once: the
    twins of ``probs`` run eagerly at every rollout step."""
    global _tf_module
    if _tf_module is None:
        import tensorflow

        _tf_module = tensorflow
    return _tf_module


_tf_module = None


class Bernoulli:
    """Karpathy's head: one logit ``z`` (N,), ``p = sigmoid(z) = P(a = 1)``, actions 0 and 1.

    ``log pi(a | z) = -BCE(a, z)``: ``-softplus(-z)`` for ``a = 1``, ``-softplus(z)`` for 0.
    """

    name = "bernoulli"
    n_actions = 2
    n_outputs = 1
    action_kind = "float"  # actions are kept as 0.0/1.0 (BCE labels) in the policy's dtype

    def __init__(self, n_actions: int | None = None):
        if n_actions is not None and n_actions != 2:
            raise ValueError(
                f"the Bernoulli head has 2 actions, got n_actions={n_actions!r} "
                "(use head='categorical')"
            )

    def __repr__(self) -> str:
        return "Bernoulli()"

    def logits(self, out: np.ndarray) -> np.ndarray:
        """(N, 1) network outputs -> (N,) logits ``z``, what the other methods take."""
        return out[:, 0]

    def probs(self, z: np.ndarray) -> np.ndarray:
        """(N,) ``p = P(a = 1)``: what :meth:`sample` takes."""
        return sigmoid(z)

    def action_probs(self, probs: np.ndarray) -> np.ndarray:
        """(N, 2) ``(1 - p, p)`` from :meth:`probs`."""
        return np.stack([1 - probs, probs], axis=1)

    def sample(self, probs: np.ndarray, u: np.ndarray) -> np.ndarray:
        """(N,) actions ``a = u < p`` (the gist's) from (N,) uniforms in [0, 1)."""
        return u < probs

    def greedy(self, probs: np.ndarray) -> np.ndarray:
        """(N,) the more probable action (1 where ``p > 0.5``)."""
        return probs > 0.5

    def check_actions(self, a: np.ndarray) -> str | None:
        """What is wrong with (N,) actions, or None."""
        ok = (a == 0) | (a == 1) if a.dtype.kind in "biuf" else None
        return None if _all(ok) else f"actions must be 0 or 1, got {_bad(a, ok)}"

    def check_action_space(self, space) -> str | None:
        """What keeps an env's action space from being this head's, or None."""
        if _discrete(space) != 2:
            return (
                "pgrl's Bernoulli head needs Discrete(2) actions (it gives P(action = 1)), but "
                f"the env has action space {space}; use a categorical policy"
            )
        return None

    def log_prob(self, z: np.ndarray, a: np.ndarray) -> np.ndarray:
        """(N,) ``log pi(a | z)``."""
        return -np.where(a == 1, softplus(-z), softplus(z))

    def onehot(self, a: np.ndarray) -> np.ndarray:
        """(N,) the indicator of ``a = 1``: ``d log pi / dz = onehot(a) - probs(z)``."""
        return np.asarray(a, dtype=np.float64)

    def dlog_prob(self, z: np.ndarray, a: np.ndarray) -> np.ndarray:
        """(N,) ``d log pi(a | z) / dz = a - sigmoid(z)`` (DESIGN.md, cause 1: through the
        sigmoid); for ``a = 1`` written ``sigmoid(-z)``, exact where ``p`` rounds to 1."""
        return np.where(a == 1, sigmoid(-z), -sigmoid(z))

    def entropy(self, z: np.ndarray) -> np.ndarray:
        """(N,) ``p * softplus(-z) + (1 - p) * softplus(z)``, with ``1 - p = sigmoid(-z)``
        (``1 - p`` itself would round to 0)."""
        return sigmoid(z) * softplus(-z) + sigmoid(-z) * softplus(z)

    def dentropy(self, z: np.ndarray) -> np.ndarray:
        """(N,) ``dH/dz = -z p (1 - p)`` (as ``log((1 - p) / p) = -z``)."""
        return -z * sigmoid(z) * sigmoid(-z)

    def prob_stat(self, z: np.ndarray, a: np.ndarray) -> float:
        """The ``mean_prob`` an update reports: the mean ``P(a = 1)``."""
        return float(np.mean(sigmoid(z)))

    # ----- the same in TensorFlow ops -----

    def tf_logits(self, out):
        return out[:, 0]

    def tf_probs(self, out):
        """(N, 1) ``sigmoid`` of the (N, 1) network outputs, as ``logits`` of them reads ``p``:
        the rollout calls it eagerly every step, where a slice of a tensor would cost more."""
        return _tf().raw_ops.Sigmoid(x=out)

    def tf_log_prob(self, z, a):
        return -_tf().nn.sigmoid_cross_entropy_with_logits(labels=a, logits=z)

    def tf_entropy(self, z):
        tf = _tf()
        return tf.sigmoid(z) * tf.math.softplus(-z) + tf.sigmoid(-z) * tf.math.softplus(z)

    def tf_prob_stat(self, z, a):
        tf = _tf()
        return tf.reduce_mean(tf.sigmoid(z))


class Categorical:
    """One logit per action, ``z`` (N, n), ``pi = softmax(z)``, actions ``0 .. n - 1``;
    ``log pi(a | z) = log_softmax(z)[a]``."""

    name = "categorical"
    action_kind = "int"

    def __init__(self, n_actions: int | None = None):
        if n_actions is None:
            raise ValueError("the categorical head needs n_actions")
        if isinstance(n_actions, bool) or not isinstance(n_actions, int | np.integer):
            raise ValueError(f"n_actions must be a positive integer, got {n_actions!r}")
        if n_actions < 2:
            raise ValueError(f"n_actions must be at least 2, got {n_actions!r}")
        self.n_actions = self.n_outputs = int(n_actions)

    def __repr__(self) -> str:
        return f"Categorical({self.n_actions})"

    def logits(self, out: np.ndarray) -> np.ndarray:
        """(N, n) network outputs are the logits."""
        return out

    def probs(self, z: np.ndarray) -> np.ndarray:
        """(N, n) ``pi = softmax(z)``: what :meth:`sample` takes."""
        return softmax(z)

    def action_probs(self, probs: np.ndarray) -> np.ndarray:
        return probs

    def sample(self, probs: np.ndarray, u: np.ndarray) -> np.ndarray:
        """(N,) the first ``k`` with ``u < cumsum(pi)[k]``, i.e. the number of ``k`` with
        ``u >= cumsum(pi)[k]`` (cumsum is non-decreasing); capped at ``n - 1`` for a ``u`` above a
        total rounded below 1."""
        cdf = np.cumsum(probs, axis=1)
        return np.minimum(np.sum(u[:, None] >= cdf, axis=1), self.n_actions - 1)

    def greedy(self, probs: np.ndarray) -> np.ndarray:
        return np.argmax(probs, axis=1)

    def check_actions(self, a: np.ndarray) -> str | None:
        k = self.n_actions
        ok = (a == np.round(a)) & (a >= 0) & (a < k) if a.dtype.kind in "biuf" else None
        return None if _all(ok) else f"actions must be integers in [0, {k}), got {_bad(a, ok)}"

    def check_action_space(self, space) -> str | None:
        if _discrete(space) != self.n_actions:
            return f"the policy has {self.n_actions} actions but the env has action space {space}"
        return None

    def log_prob(self, z: np.ndarray, a: np.ndarray) -> np.ndarray:
        return log_softmax(z)[np.arange(len(a)), a]

    def onehot(self, a: np.ndarray) -> np.ndarray:
        """(N, n) one-hot rows of ``a``: ``d log pi / dz = onehot(a) - probs(z)``."""
        return np.eye(self.n_actions)[a]

    def dlog_prob(self, z: np.ndarray, a: np.ndarray) -> np.ndarray:
        """(N, n) ``onehot(a) - softmax(z)``."""
        d = -softmax(z)
        d[np.arange(len(a)), a] += 1
        return d

    def entropy(self, z: np.ndarray) -> np.ndarray:
        """(N,) ``-sum_k pi_k log pi_k``, finite for any finite logits."""
        return -np.sum(softmax(z) * log_softmax(z), axis=1)

    def dentropy(self, z: np.ndarray) -> np.ndarray:
        """(N, n) ``dH/dz_j = -pi_j (log pi_j + H)``."""
        pi, log_pi = softmax(z), log_softmax(z)
        h = -np.sum(pi * log_pi, axis=1, keepdims=True)
        return -pi * (log_pi + h)

    def prob_stat(self, z: np.ndarray, a: np.ndarray) -> float:
        """The ``mean_prob`` an update reports: the mean probability of the action taken."""
        return float(np.mean(softmax(z)[np.arange(len(a)), a]))

    # ----- the same in TensorFlow ops -----

    def tf_logits(self, out):
        return out

    def tf_probs(self, out):
        """(N, n) ``softmax`` of the network outputs (see Bernoulli.tf_probs)."""
        return _tf().raw_ops.Softmax(logits=out)

    def tf_log_prob(self, z, a):
        return -_tf().nn.sparse_softmax_cross_entropy_with_logits(labels=a, logits=z)

    def tf_entropy(self, z):
        tf = _tf()
        return -tf.reduce_sum(tf.nn.softmax(z) * tf.nn.log_softmax(z), axis=1)

    def tf_prob_stat(self, z, a):
        tf = _tf()
        return tf.reduce_mean(tf.gather(tf.nn.softmax(z), a, axis=1, batch_dims=1))


def _discrete(space) -> int | None:
    """``n`` of a gymnasium ``Discrete(n)`` space starting at 0, else None."""
    from gymnasium import spaces

    ok = isinstance(space, spaces.Discrete) and space.start == 0
    return int(space.n) if ok else None


def _all(ok) -> bool:
    return ok is not None and bool(np.all(ok))


def _bad(a: np.ndarray, ok):
    """Up to three offending actions for an error message, or the dtype of non-numbers."""
    return a.dtype if ok is None else a[~ok][:3]


DISTRIBUTIONS = {"bernoulli": Bernoulli, "categorical": Categorical}
HEADS = tuple(DISTRIBUTIONS)


def make_distribution(head: str, n_actions: int | None = None) -> Bernoulli | Categorical:
    """The distribution of ``head`` over ``n_actions`` actions (None: the head's default).

    Raises:
        ValueError: an unknown head, or an action count the head cannot have.
    """
    if head not in DISTRIBUTIONS:
        raise ValueError(f"head must be one of {HEADS}, got {head!r}")
    return DISTRIBUTIONS[head](n_actions)
