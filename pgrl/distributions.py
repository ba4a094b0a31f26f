"""The action distributions of the policy heads, one class per head.

Each reads the network's output ``out`` (N, k) (with the head's own parameters, :meth:`outputs`:
the gaussian head's ``log_std``) as its parameters ``z = logits(out)`` and gives the policy
``pi(. | s)`` from them: its probabilities, a sampled action from its draws (``noise``),
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


class _Discrete:
    """What the discrete heads share: one uniform per action, no parameters of their own."""

    sample_rows_alone = False  # a last-bit change of p changes ``u < p`` with odds ~1e-16
    densities = False  # pi(a | s) is a probability: log pi <= 0
    action_shape = ()  # one action per step
    params: dict = {}  # parameters of the head besides the network's (none)

    def noise(self, rng: np.random.Generator) -> float:
        """The draw behind one action: a uniform in [0, 1)."""
        return rng.random()

    def outputs(self, out: np.ndarray, weights: dict) -> np.ndarray:
        """The head's input from the network's (N, k) outputs: the outputs themselves."""
        return out

    def param_grads(self, dout: np.ndarray) -> tuple[np.ndarray, dict]:
        """``(dL/d network outputs, {})``: the head has no parameters of its own."""
        return dout, {}

    def tf_outputs(self, out, weights):
        return out


class Bernoulli(_Discrete):
    """Karpathy's head: one logit ``z`` (N,), ``p = sigmoid(z) = P(a = 1)``, actions 0 and 1.

    ``log pi(a | z) = -BCE(a, z)``: ``-softplus(-z)`` for ``a = 1``, ``-softplus(z)`` for 0.
    """

    name = "bernoulli"
    n_actions = 2
    n_outputs = 1
    action_kind = "float"  # actions are kept as 0.0/1.0 (BCE labels) in the policy's dtype
    action_dtype = np.int8  # how a batch stores them

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


class Categorical(_Discrete):
    """One logit per action, ``z`` (N, n), ``pi = softmax(z)``, actions ``0 .. n - 1``;
    ``log pi(a | z) = log_softmax(z)[a]``."""

    name = "categorical"
    action_kind = "int"

    def __init__(self, n_actions: int | None = None):
        n = _size("n_actions", n_actions, 2, "the categorical head needs n_actions")
        self.n_actions = self.n_outputs = n
        self.action_dtype = np.int8 if n <= np.iinfo(np.int8).max + 1 else np.int64

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


LOG_2PI = float(np.log(2 * np.pi))


class Gaussian:
    """A diagonal Gaussian over ``d`` continuous action dimensions: the network gives the mean
    ``mu`` (N, d), and ``log_std`` (d,) is a learned parameter of its own, the same in every state.

    The head's input ``z`` (N, 2d) is ``[mu | log_std]``, ``log_std`` repeated on every row
    (:meth:`outputs`), so the same methods as the other heads give ``log pi`` and its gradient:
    ``log pi(a | z) = -sum_i [(a_i - mu_i)^2 / (2 sigma_i^2) + log sigma_i + 0.5 log(2 pi)]``,
    ``H = sum_i (log sigma_i + 0.5 log(2 pi e))``, ``sigma = exp(log_std)``. Actions are
    ``a = mu + sigma * eps`` from standard normals ``eps``; the env gets them clipped to its
    bounds, the batch keeps ``a`` itself.
    """

    name = "gaussian"
    action_kind = "float"
    # an action is mu plus noise, so it carries mu's last bits: the rollout asks for one row at
    # a time (see pgrl.rollout)
    sample_rows_alone = True
    densities = True  # pi(a | s) is a density: log pi may be positive
    action_dtype = np.float32  # a batch keeps the sampled actions in gymnasium's action dtype

    def __init__(self, n_actions: int | None = None):
        missing = "the gaussian head needs action_dim, the width of the Box actions"
        d = _size("action_dim", n_actions, 1, missing)
        self.n_actions = self.action_dim = self.n_outputs = d
        self.action_shape = (d,)
        self.params = {"log_std": (d,)}

    def __repr__(self) -> str:
        return f"Gaussian({self.action_dim})"

    def noise(self, rng: np.random.Generator) -> np.ndarray:
        """The draw behind one action: (d,) standard normals."""
        return rng.standard_normal(self.action_dim)

    def outputs(self, out: np.ndarray, weights: dict) -> np.ndarray:
        """(N, 2d) ``[mu | log_std]``: the network's (N, d) ``mu``, ``weights["log_std"]``."""
        log_std = np.broadcast_to(weights["log_std"], out.shape)
        return np.concatenate([out, log_std], axis=1)

    def param_grads(self, dz: np.ndarray) -> tuple[np.ndarray, dict]:
        """``(dL/dmu (N, d), {"log_std": dL/dlog_std (d,)})`` from ``dL/dz`` (N, 2d): the
        ``log_std`` columns of every row add up."""
        d = self.action_dim
        return dz[:, :d], {"log_std": dz[:, d:].sum(axis=0)}

    def logits(self, out: np.ndarray) -> np.ndarray:
        """``z = [mu | log_std]`` (N, 2d), as :meth:`outputs` gives it."""
        return out

    def _split(self, z):
        d = self.action_dim
        return z[:, :d], z[:, d:]

    def probs(self, z: np.ndarray) -> np.ndarray:
        """The distribution's parameters ``[mu | log_std]`` (N, 2d): what :meth:`sample` takes."""
        return z

    def action_probs(self, probs: np.ndarray) -> np.ndarray:
        raise ValueError("the gaussian head has densities, not action probabilities")

    def sample(self, probs: np.ndarray, eps: np.ndarray) -> np.ndarray:
        """(N, d) actions ``mu + exp(log_std) * eps`` from (N, d) standard normals."""
        mu, log_std = self._split(probs)
        return mu + np.exp(log_std) * eps

    def greedy(self, probs: np.ndarray) -> np.ndarray:
        """(N, d) the mean ``mu``."""
        return self._split(probs)[0].copy()

    def check_actions(self, a: np.ndarray) -> str | None:
        if a.ndim != 2 or a.shape[1] != self.action_dim:
            return f"actions must have shape (N, {self.action_dim}), got {a.shape}"
        if a.dtype.kind not in "biuf":
            return f"actions must be numbers, got dtype {a.dtype}"
        if not np.all(np.isfinite(a)):
            return "actions contain NaN or inf"
        return None

    def check_action_space(self, space) -> str | None:
        problem = box_action_problem(space)
        if problem:
            return problem
        if space.shape[0] != self.action_dim:
            return f"the policy has {self.action_dim} action dimensions but the env has {space}"
        return None

    def log_prob(self, z: np.ndarray, a: np.ndarray) -> np.ndarray:
        """(N,) ``-sum_i [0.5 ((a_i - mu_i) / sigma_i)^2 + log_std_i + 0.5 log(2 pi)]``."""
        mu, log_std = self._split(z)
        u = (a - mu) * np.exp(-log_std)
        return -np.sum(0.5 * np.square(u) + log_std + 0.5 * LOG_2PI, axis=1)

    def dlog_prob(self, z: np.ndarray, a: np.ndarray) -> np.ndarray:
        """(N, 2d) ``[(a - mu) / sigma^2 | ((a - mu) / sigma)^2 - 1]``."""
        mu, log_std = self._split(z)
        inv = np.exp(-log_std)
        u = (a - mu) * inv
        return np.concatenate([u * inv, np.square(u) - 1], axis=1)

    def entropy(self, z: np.ndarray) -> np.ndarray:
        """(N,) ``sum_i (log_std_i + 0.5 log(2 pi e))``."""
        return np.sum(self._split(z)[1] + 0.5 * (LOG_2PI + 1), axis=1)

    def dentropy(self, z: np.ndarray) -> np.ndarray:
        """(N, 2d) ``[0 | 1]``."""
        d = self.action_dim
        return np.concatenate([np.zeros_like(z[:, :d]), np.ones_like(z[:, d:])], axis=1)

    def prob_stat(self, z: np.ndarray, a: np.ndarray) -> float:
        """The ``mean_prob`` an update reports: for this head, the mean ``sigma``."""
        return float(np.mean(np.exp(self._split(z)[1])))

    # ----- the same in TensorFlow ops -----

    def tf_outputs(self, out, weights):
        tf = _tf()
        return tf.concat([out, tf.broadcast_to(weights["log_std"], tf.shape(out))], axis=1)

    def tf_logits(self, out):
        return out

    def tf_probs(self, out):
        return out

    def tf_log_prob(self, z, a):
        tf = _tf()
        mu, log_std = self._split(z)
        u = (a - mu) * tf.exp(-log_std)
        return -tf.reduce_sum(0.5 * tf.square(u) + log_std + 0.5 * LOG_2PI, axis=1)

    def tf_entropy(self, z):
        return _tf().reduce_sum(self._split(z)[1] + 0.5 * (LOG_2PI + 1), axis=1)

    def tf_prob_stat(self, z, a):
        tf = _tf()
        return tf.reduce_mean(tf.exp(self._split(z)[1]))


def box_action_problem(space) -> str | None:
    """What keeps a gymnasium action space from being the gaussian head's (a 1-D ``Box`` with
    finite bounds), or None."""
    from gymnasium import spaces

    if not isinstance(space, spaces.Box):
        return f"the gaussian head needs Box actions of shape (d,), got {space}" + (
            "; pgrl has no MultiDiscrete head" if isinstance(space, spaces.MultiDiscrete) else ""
        )
    if len(space.shape) != 1:
        return f"the gaussian head needs 1-D Box actions (d,), got shape {space.shape}"
    if not (np.all(np.isfinite(space.low)) and np.all(np.isfinite(space.high))):
        return (
            f"the gaussian head needs finite action bounds to clip to, got low {space.low} "
            f"and high {space.high}"
        )
    return None


def _size(name: str, value, minimum: int, missing: str) -> int:
    """A head's size ``value`` as an int >= ``minimum``; ValueError ``missing`` for None."""
    if value is None:
        raise ValueError(missing)
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value!r}")
    return int(value)


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


DISTRIBUTIONS = {"bernoulli": Bernoulli, "categorical": Categorical, "gaussian": Gaussian}
HEADS = tuple(DISTRIBUTIONS)


def make_distribution(
    head: str, n_actions: int | None = None
) -> Bernoulli | Categorical | Gaussian:
    """The distribution of ``head`` over ``n_actions`` actions (None: the head's default; the
    gaussian head's: its action dimension ``d``).

    Raises:
        ValueError: an unknown head, or an action count the head cannot have.
    """
    if head not in DISTRIBUTIONS:
        raise ValueError(f"head must be one of {HEADS}, got {head!r}")
    return DISTRIBUTIONS[head](n_actions)
