"""What both backends share: shapes, seeded init, and validation of every input.

:class:`Network` is an MLP with ReLU hidden layers, its weights and its RMSprop; :class:`Policy`
(logits of ``pi(a | s)``) and :class:`ValueNet` (``V(s)``) are the two networks REINFORCE trains.
A backend subclasses them and implements the underscored methods, which receive already-validated
NumPy arrays of the network's dtype. Everything a user can get wrong is checked here, once, before
any state changes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pgrl import validate as valid
from pgrl.distributions import make_distribution
from pgrl.optim import RMSprop
from pgrl.policies.threads import limit_blas
from pgrl.sparse import SparseRows


def weight_shapes(
    obs_dim: int, hidden_sizes: Sequence[int], bias: bool, n_logits: int = 1
) -> dict[str, tuple[int, ...]]:
    """Names and shapes of the parameters: ``W1`` (obs_dim, H1), ..., ``Wn`` (H_last, n_logits),
    ``bi``."""
    sizes = [obs_dim, *hidden_sizes, n_logits]
    shapes: dict[str, tuple[int, ...]] = {}
    for i in range(1, len(sizes)):
        shapes[f"W{i}"] = (sizes[i - 1], sizes[i])
        if bias:
            shapes[f"b{i}"] = (sizes[i],)
    return shapes


def init_weights(
    obs_dim: int,
    hidden_sizes: Sequence[int],
    bias: bool,
    seed: int | None,
    dtype: str,
    n_logits: int = 1,
    stream: int = 0,
) -> dict[str, np.ndarray]:
    """Karpathy's init, ``randn(fan_in, fan_out) / sqrt(fan_in)``, biases zero.

    Drawn in float64 from ``numpy.random.default_rng(seed)`` (``default_rng([seed, stream])`` for
    a stream other than 0: the value network's is 1, so that it never starts from the policy's
    numbers) and then cast, so every backend and both dtypes start from the same numbers.
    """
    rng = np.random.default_rng(seed if stream == 0 or seed is None else [seed, stream])
    weights = {}
    for name, shape in weight_shapes(obs_dim, hidden_sizes, bias, n_logits).items():
        if name.startswith("W"):
            w = rng.standard_normal(shape) / np.sqrt(shape[0])
        else:
            w = np.zeros(shape)
        weights[name] = w.astype(dtype)
    return weights


class Network:
    """An MLP ``obs -> n_outputs`` with ReLU hidden layers, trained by its own RMSprop.

    Args:
        obs_dim: width of one observation.
        hidden_sizes: units of each ReLU hidden layer, e.g. ``(200,)`` or ``(64, 64)``.
        optimizer: :class:`pgrl.optim.RMSprop`; Karpathy's defaults when omitted.
        seed: seed of the NumPy generator that draws the initial weights.
        dtype: ``"float64"`` (bit-for-bit comparable backends) or ``"float32"`` (faster).
        reduction: ``"sum"`` over all steps of the batch (Karpathy) or ``"mean"`` (Keras losses).
        bias: give every layer a bias.
        max_grad_norm: before every RMSprop step, scale the gradients by
            ``c / max(norm, c)`` (``norm``: their global L2 norm over all of this network's
            parameters, ``c``: this value), as ``tf.clip_by_global_norm``; None: no clipping.
    """

    backend = "base"
    _init_stream = 0  # see init_weights

    def __init__(
        self,
        obs_dim: int,
        hidden_sizes: Sequence[int],
        optimizer: RMSprop | None,
        seed: int | None,
        dtype: str,
        reduction: str,
        bias: bool,
        max_grad_norm: float | None,
        n_outputs: int,
    ):
        self.obs_dim = valid.positive_int("obs_dim", obs_dim)
        if isinstance(hidden_sizes, int | np.integer) and not isinstance(hidden_sizes, bool):
            hidden_sizes = (hidden_sizes,)
        if not isinstance(hidden_sizes, Sequence) or isinstance(hidden_sizes, str):
            raise ValueError(
                f"hidden_sizes must be a sequence of positive integers, got {hidden_sizes!r}"
            )
        self.hidden_sizes = tuple(
            valid.positive_int(f"hidden_sizes[{i}]", h) for i, h in enumerate(hidden_sizes)
        )
        if optimizer is None:
            optimizer = RMSprop()
        if not isinstance(optimizer, RMSprop):
            raise ValueError(f"optimizer must be a pgrl.optim.RMSprop, got {optimizer!r}")
        self.optimizer = optimizer
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int | np.integer)):
            raise ValueError(f"seed must be an integer or None, got {seed!r}")
        self.seed = seed
        self.dtype = np.dtype(valid.choice("dtype", dtype, valid.DTYPES))
        self.reduction = valid.choice("reduction", reduction, valid.REDUCTIONS)
        if not isinstance(bias, bool | np.bool_):
            raise ValueError(f"bias must be true or false, got {bias!r}")
        self.bias = bool(bias)
        self.max_grad_norm = valid.max_grad_norm("max_grad_norm", max_grad_norm)
        self.shapes = weight_shapes(self.obs_dim, self.hidden_sizes, self.bias, n_outputs)
        # an ObsNormalizer (pgrl.normalize) applied to every observation given, or None
        self.obs_norm = None
        limit_blas()  # one thread per NumPy product by default: see pgrl.policies.threads

    def initial_weights(self) -> dict[str, np.ndarray]:
        """The weights this network starts from (see :func:`init_weights`)."""
        n_outputs = self.shapes[f"W{len(self.hidden_sizes) + 1}"][1]
        return init_weights(
            self.obs_dim,
            self.hidden_sizes,
            self.bias,
            self.seed,
            self.dtype.name,
            n_outputs,
            self._init_stream,
        )

    # ----- public API: validate, convert, then call the backend -----

    def get_weights(self) -> dict[str, np.ndarray]:
        """Copies of the parameters: ``{"W1": (obs_dim, H1), ..., "Wn": (H_last, n_outputs)}``
        and ``b1, ...`` with biases."""
        return self._get_weights()

    def set_weights(self, weights: dict) -> None:
        """Replace all parameters; names and shapes must be exactly those of :meth:`get_weights`."""
        self._set_weights(self._check_arrays("weights", weights))

    def apply_gradients(self, grads: dict) -> None:
        """One RMSprop descent step with the given gradients (names/shapes as get_weights),
        clipped first to ``max_grad_norm`` when it is set."""
        self._apply_gradients(self._check_arrays("grads", grads))

    def get_optimizer_state(self) -> dict[str, np.ndarray]:
        """RMSprop state as plain arrays: ``v_<name>`` per parameter and ``step`` (int64 scalar)."""
        return self._get_optimizer_state()

    def set_optimizer_state(self, state: dict) -> None:
        """Restore a state from :meth:`get_optimizer_state` (of either backend)."""
        if not isinstance(state, dict):
            raise ValueError(f"optimizer state must be a dict, got {type(state).__name__}")
        state = dict(state)
        if "step" not in state:
            raise ValueError("optimizer state is missing 'step'")
        step = np.asarray(state.pop("step"))
        if step.shape != () or not np.issubdtype(step.dtype, np.integer) or step < 0:
            raise ValueError(f"optimizer state 'step' must be a non-negative integer, got {step!r}")
        velocities = {}
        for key, value in state.items():
            if not key.startswith("v_"):
                raise ValueError(
                    f"optimizer state has unexpected entry {key!r}; expected 'step' and "
                    f"{sorted('v_' + n for n in self.shapes)}"
                )
            velocities[key[2:]] = value
        velocities = self._check_arrays("optimizer state", velocities, prefix="v_")
        if any(np.any(v < 0) for v in velocities.values()):
            raise ValueError("optimizer state has negative squared-gradient averages")
        self._set_optimizer_state(velocities, int(step))

    # ----- validation -----

    def _check_arrays(self, what: str, arrays, prefix: str = "") -> dict[str, np.ndarray]:
        """Exactly the expected names and shapes, finite values, cast to dtype (copies)."""
        if not isinstance(arrays, dict):
            raise ValueError(f"{what} must be a dict of arrays, got {type(arrays).__name__}")
        missing = [prefix + n for n in self.shapes if n not in arrays]
        extra = [prefix + n for n in arrays if n not in self.shapes]
        if missing or extra:
            raise ValueError(
                f"{what} do not match the network: missing {missing}, unexpected {extra} "
                f"(expected {[prefix + n for n in self.shapes]})"
            )
        out = {}
        for name, shape in self.shapes.items():
            try:
                a = np.array(arrays[name], dtype=self.dtype)
            except (TypeError, ValueError) as e:
                raise ValueError(f"{what}[{prefix + name!r}] is not a numeric array: {e}") from None
            if a.shape != shape:
                raise ValueError(f"{what}[{prefix + name!r}] has shape {a.shape}, expected {shape}")
            if not np.all(np.isfinite(a)):
                raise ValueError(f"{what}[{prefix + name!r}] contains NaN or inf")
            out[name] = a
        return out

    def _check_obs(self, obs) -> np.ndarray | SparseRows:
        """(N, obs_dim) finite array of the network's dtype, or SparseRows of that width;
        normalized by ``obs_norm`` when it is set.

        Integer observations (Pong's int8 frame differences) are kept as they are: the backends
        cast what they touch, and the NumPy one touches only the nonzeros.
        """
        if isinstance(obs, SparseRows) and self.obs_norm is not None:
            raise ValueError("obs_norm normalizes dense observations, not SparseRows")
        if isinstance(obs, SparseRows):
            if obs.n_cols != self.obs_dim:
                raise ValueError(f"obs must have shape (N, {self.obs_dim}), got {obs.shape}")
            if obs.values.dtype.kind == "f" and not np.all(np.isfinite(obs.values)):
                raise ValueError("obs contains NaN or inf")
            return obs
        x = np.asarray(obs)
        if x.ndim != 2 or x.shape[1] != self.obs_dim:
            hint = " (use obs[None] for a single observation)" if x.shape == (self.obs_dim,) else ""
            raise ValueError(f"obs must have shape (N, {self.obs_dim}), got {x.shape}{hint}")
        if x.dtype.kind not in "biuf":
            raise ValueError(f"obs must be numeric, got dtype {x.dtype}")
        if x.dtype.kind in "iu" and self.obs_norm is None:
            return x
        with np.errstate(over="ignore"):
            x = x.astype(self.dtype, copy=False)
        if not np.isfinite(x).all():  # after the cast: 1e300 is inf in float32
            raise ValueError(f"obs contains NaN or inf (in {self.dtype.name})")
        return x if self.obs_norm is None else self.obs_norm(x).astype(self.dtype)

    def _check_vector(self, name: str, values, n: int) -> np.ndarray:
        """(n,) finite numbers in the network's dtype, or ValueError naming ``name``."""
        v = np.asarray(values)
        if v.shape != (n,):
            raise ValueError(f"{name} must have shape ({n},) to match obs, got {v.shape}")
        if v.dtype.kind not in "biuf":
            raise ValueError(f"{name} must be numeric, got dtype {v.dtype}")
        with np.errstate(over="ignore"):  # an overflow is reported below, as one error
            v = v.astype(self.dtype)
        if not np.all(np.isfinite(v)):  # after the cast: 1e300 is inf in float32
            raise ValueError(f"{name} contain NaN or inf (in {self.dtype.name})")
        return v

    def _check_nonempty_obs(self, obs):
        x = self._check_obs(obs)
        if x.shape[0] == 0:
            raise ValueError("obs is an empty batch; need at least one step")
        return x

    # ----- backend hooks shared by both networks -----

    def _get_weights(self) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def _set_weights(self, weights: dict[str, np.ndarray]) -> None:
        raise NotImplementedError

    def _apply_gradients(self, grads: dict[str, np.ndarray]) -> None:
        raise NotImplementedError

    def _get_optimizer_state(self) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def _set_optimizer_state(self, velocities: dict[str, np.ndarray], step: int) -> None:
        raise NotImplementedError

    def _outputs(self, obs) -> np.ndarray:
        """(N, k) network outputs, as NumPy."""
        raise NotImplementedError

    def _loss(self, obs, *targets) -> float:
        """The loss of a validated batch: obs and the network's targets (see ``loss``)."""
        raise NotImplementedError

    def _gradients(self, obs, *targets) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def _update(self, obs, *targets) -> dict[str, float]:
        raise NotImplementedError

    def _gradient_sums(self, obs, *targets) -> tuple[dict[str, np.ndarray], float, np.ndarray]:
        """``(grads, loss, outputs)`` of the loss summed over the steps, whatever
        ``reduction`` says; outputs (N, k) as NumPy."""
        raise NotImplementedError


class Policy(Network):
    """A policy ``pi(a | obs)``: an MLP whose outputs parameterise the head's distribution
    (:mod:`pgrl.distributions`), trained by REINFORCE.

    The Bernoulli head (Karpathy's) has one logit ``z`` and ``p = sigmoid(z) = P(action = 1)``;
    the categorical head has one logit per action and ``pi = softmax(z)``; the gaussian head a
    mean ``mu`` per action dimension and a learned ``log_std`` (weights key ``"log_std"``).
    The loss is ``L = -sum_t A_t * log pi(a_t | s_t) - entropy_coef * sum_t H(pi(. | s_t))``
    (divided by N with ``reduction="mean"``): ``-log pi`` is the binary cross-entropy from logits
    for the Bernoulli head, the cross-entropy for the categorical one.

    Args (besides :class:`Network`'s; ``bias`` defaults to False, as Karpathy's network):
        head: ``"bernoulli"`` (one logit, actions 0 and 1), ``"categorical"`` (``n_actions``
            logits, softmax) or ``"gaussian"`` (``d`` means, ``log_std``; 1-D Box actions).
        n_actions: the number of actions: 2 (or None) for the Bernoulli head, at least 2 for
            the categorical head; the gaussian head's action dimension ``d``.
        action_dim: the gaussian head's action dimension ``d`` (the same as ``n_actions``).
        init_log_std: the gaussian head's initial ``log_std`` (every dimension).
        entropy_coef: weight of the entropy bonus, >= 0 (0: none, Karpathy's).
    """

    def __init__(
        self,
        obs_dim: int,
        hidden_sizes: Sequence[int] = (200,),
        optimizer: RMSprop | None = None,
        seed: int | None = 0,
        dtype: str = "float64",
        reduction: str = "sum",
        bias: bool = False,
        head: str = "bernoulli",
        n_actions: int | None = None,
        entropy_coef: float = 0.0,
        max_grad_norm: float | None = None,
        action_dim: int | None = None,
        init_log_std: float = 0.0,
    ):
        if action_dim is not None and n_actions is not None and action_dim != n_actions:
            raise ValueError(f"action_dim {action_dim!r} and n_actions {n_actions!r} disagree")
        if action_dim is not None and head != "gaussian":
            raise ValueError(f"action_dim is the gaussian head's; head is {head!r}")
        self.distribution = make_distribution(head, n_actions if action_dim is None else action_dim)
        self.head, self.n_actions = head, self.distribution.n_actions
        self.entropy_coef = valid.entropy_coef("entropy_coef", entropy_coef)
        self.init_log_std = valid.real(
            "init_log_std", init_log_std, lambda v: abs(v) <= 20, "in [-20, 20]"
        )
        if self.init_log_std and head != "gaussian":
            raise ValueError(f"init_log_std is the gaussian head's; head is {head!r}")
        super().__init__(
            obs_dim, hidden_sizes, optimizer, seed, dtype, reduction, bias, max_grad_norm,
            self.distribution.n_outputs,
        )  # fmt: skip
        self.shapes.update(self.distribution.params)  # the gaussian head's log_std, last

    @property
    def action_dim(self) -> int | None:
        """The gaussian head's action dimension ``d`` (None for the discrete heads)."""
        return self.n_actions if self.distribution.action_shape else None

    def initial_weights(self) -> dict[str, np.ndarray]:
        """The network's initial weights (see :func:`init_weights`), and the gaussian head's
        ``log_std``, all ``init_log_std``."""
        weights = super().initial_weights()
        for name, shape in self.distribution.params.items():
            weights[name] = np.full(shape, self.init_log_std, dtype=self.dtype)
        return weights

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(obs_dim={self.obs_dim}, hidden_sizes={self.hidden_sizes}, "
            f"dtype={self.dtype.name!r}, reduction={self.reduction!r}, bias={self.bias}, "
            f"head={self.head!r}, n_actions={self.n_actions}, init_log_std={self.init_log_std}, "
            f"entropy_coef={self.entropy_coef}, max_grad_norm={self.max_grad_norm}, "
            f"optimizer={self.optimizer})"
        )

    def action_prob(self, obs) -> np.ndarray:
        """P(action = 1) for a batch of observations (Bernoulli head only).

        Args:
            obs: array of shape (N, obs_dim).

        Returns:
            array of shape (N,), in the policy's dtype.
        """
        if self.distribution.n_outputs != 1:
            raise ValueError(
                f"action_prob gives P(action = 1) of the Bernoulli head; this policy is "
                f"{self.head} with {self.n_actions} actions: use action_probs"
            )
        return self._probs(self._check_obs(obs))

    def action_probs(self, obs) -> np.ndarray:
        """The probability of every action, for either head.

        Args:
            obs: array of shape (N, obs_dim).

        Returns:
            array of shape (N, n_actions), in the policy's dtype; the Bernoulli head gives
            ``(1 - p, p)``.
        """
        return self.distribution.action_probs(self._probs(self._check_obs(obs)))

    def sample(self, obs, u: np.ndarray, greedy: bool = False) -> np.ndarray:
        """(N,) actions for (N, obs_dim) ``obs`` from (N,) uniforms ``u`` in [0, 1), one each
        (see the head's ``sample``); ``greedy``: the most probable actions, ``u`` unused. The
        gaussian head: (N, d) actions ``mu + sigma * u`` from (N, d) standard normals ``u``,
        greedy ``mu``."""
        probs = self._probs(self._check_obs(obs))
        dist = self.distribution
        return dist.greedy(probs) if greedy else dist.sample(probs, u)

    def logits(self, obs) -> np.ndarray:
        """The logits: ``z`` with ``P(action = 1) = sigmoid(z)`` (Bernoulli head), or the
        categorical head's ``z`` with ``pi = softmax(z)``.

        Args:
            obs: array of shape (N, obs_dim).

        Returns:
            array of shape (N,) (Bernoulli) or (N, n_actions) (categorical), in the policy's
            dtype.
        """
        return self.distribution.logits(np.asarray(self._outputs(self._check_obs(obs))))

    def log_probs(self, obs, actions) -> np.ndarray:
        """``log pi(a_t | s_t)``: obs (N, obs_dim), actions (N,) -> (N,), in the policy's dtype."""
        x = self._check_nonempty_obs(obs)
        return self._log_probs(x, self._check_actions(actions, x.shape[0]))

    def loss(self, obs, actions, advantages, old_log_probs=None, clip=None) -> float:
        """``L`` of the class docstring (PPO's surrogate with ``old_log_probs`` and ``clip``),
        the quantity :meth:`gradients` differentiates; arguments as there."""
        return float(self._loss(*self._check_batch(obs, actions, advantages, old_log_probs, clip)))

    def gradients(self, obs, actions, advantages, old_log_probs=None, clip=None) -> dict:
        """``dL/dW`` for the loss of :meth:`loss` (not clipped: clipping is part of a step).

        Args:
            obs: (N, obs_dim) observations.
            actions: (N,) actions taken: 0 or 1 (Bernoulli), integers in [0, n_actions)
                (categorical).
            advantages: (N,) finite weights ``A_t`` (e.g. standardized discounted returns).
            old_log_probs: (N,) ``log pi_old(a_t | s_t)`` of the policy that played the batch,
                with ``clip`` (``eps`` > 0): the loss is PPO's clipped surrogate
                ``-sum_t min(rho_t A_t, clip(rho_t, 1 - eps, 1 + eps) A_t)``,
                ``rho_t = exp(log pi(a_t | s_t) - old_log_probs_t)``, instead of REINFORCE's.

        Returns:
            dict with the names and shapes of :meth:`get_weights`.
        """
        return self._gradients(*self._check_batch(obs, actions, advantages, old_log_probs, clip))

    def gradient_sums(self, obs, actions, advantages) -> tuple[dict, dict]:
        """A part of a batch's REINFORCE gradient: parts of one batch add up to its gradient.

        ``L`` is summed over the N steps whatever ``reduction`` says (the caller divides the
        total by the batch's steps for ``"mean"``); nothing is clipped or stepped. Arguments as
        :meth:`gradients`.

        Returns:
            ``(grads, sums)``: ``dL/dW`` like :meth:`get_weights`, and ``{"loss": L,
            "entropy": sum_t H_t, "prob": N * mean_prob, "steps": N}``.
        """
        x, a, adv = self._check_batch(obs, actions, advantages)
        grads, loss, out = self._gradient_sums(x, a, adv)
        dist = self.distribution
        z = dist.logits(out)
        n = x.shape[0]
        sums = {"loss": loss, "entropy": float(np.sum(dist.entropy(z))), "steps": n}
        sums["prob"] = n * dist.prob_stat(z, a)
        return grads, sums

    def update(self, obs, actions, advantages, old_log_probs=None, clip=None) -> dict:
        """Gradients, clipping (with ``max_grad_norm``) and one RMSprop step in one call.

        Returns:
            statistics computed before the step: ``loss``, ``grad_norm`` (global L2 norm, before
            clipping), ``mean_prob`` (mean P(action = 1); categorical: mean probability of the
            action taken) and ``entropy`` (mean entropy of the policy, nats); with
            ``old_log_probs`` also ``approx_kl`` and ``clip_fraction``
            (:func:`pgrl.objectives.ppo_stats`).
        """
        return self._update(*self._check_batch(obs, actions, advantages, old_log_probs, clip))

    def _check_batch(self, obs, actions, advantages, old_log_probs=None, clip=None):
        """Validated obs (N, D), actions (N,) (in the policy's dtype or int64, as the head keeps
        them), advantages (N,) in the policy's dtype; with PPO's arguments also old_log_probs
        (N,) and clip (a scalar), in the policy's dtype."""
        x = self._check_nonempty_obs(obs)
        n = x.shape[0]
        advantages = self._check_vector("advantages", advantages, n)
        batch = (x, self._check_actions(actions, n), advantages)
        if old_log_probs is None and clip is None:
            return batch
        if old_log_probs is None or clip is None:
            raise ValueError("PPO's surrogate needs both old_log_probs and clip (or neither)")
        old = self._check_vector("old_log_probs", old_log_probs, n)
        if not self.distribution.densities and np.any(old > 0):  # a density's log may be > 0
            raise ValueError("old_log_probs must be log-probabilities, <= 0")
        return (*batch, old, self.dtype.type(valid.clip("clip", clip)))

    def _check_actions(self, actions, n: int) -> np.ndarray:
        """(n,) valid actions, in the policy's dtype or int64 as the head keeps them."""
        a = np.asarray(actions)
        shape = (n, *self.distribution.action_shape)
        if a.shape != shape:
            raise ValueError(f"actions must have shape {shape} to match obs, got {a.shape}")
        problem = self.distribution.check_actions(a)
        if problem:
            raise ValueError(problem)
        return a.astype(self.dtype if self.distribution.action_kind == "float" else np.int64)

    # ----- backend hooks -----

    def _probs(self, obs) -> np.ndarray:
        """The distribution's ``probs`` of the network's outputs, as NumPy."""
        raise NotImplementedError

    def _log_probs(self, obs, actions) -> np.ndarray:
        raise NotImplementedError


class ValueNet(Network):
    """A state-value network ``V(s)``: the MLP with one linear output, fit to returns by
    ``L = 0.5 * sum_t (V(s_t) - G_t)^2`` (divided by N with ``reduction="mean"``).

    Arguments as :class:`Network`'s; ``bias`` defaults to True (returns are not centred at 0).
    Its initial weights come from ``default_rng([seed, 1])``, not the policy's stream.
    """

    _init_stream = 1

    def __init__(
        self,
        obs_dim: int,
        hidden_sizes: Sequence[int] = (64,),
        optimizer: RMSprop | None = None,
        seed: int | None = 0,
        dtype: str = "float64",
        reduction: str = "sum",
        bias: bool = True,
        max_grad_norm: float | None = None,
    ):
        super().__init__(
            obs_dim, hidden_sizes, optimizer, seed, dtype, reduction, bias, max_grad_norm, 1
        )

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(obs_dim={self.obs_dim}, hidden_sizes={self.hidden_sizes}, "
            f"dtype={self.dtype.name!r}, reduction={self.reduction!r}, bias={self.bias}, "
            f"max_grad_norm={self.max_grad_norm}, optimizer={self.optimizer})"
        )

    def predict(self, obs) -> np.ndarray:
        """``V(s)`` for a batch: obs (N, obs_dim) -> (N,), in the network's dtype."""
        return self._outputs(self._check_obs(obs))[:, 0]

    def loss(self, obs, returns, old_values=None, clip=None) -> float:
        """``0.5 * sum_t (V(s_t) - G_t)^2`` (/ N with ``reduction="mean"``); obs (N, obs_dim),
        returns (N,). With ``old_values`` (N,) and ``clip`` (> 0), PPO's clipped fit
        (:func:`pgrl.objectives.clipped_value_loss`)."""
        return float(self._loss(*self._check_targets(obs, returns, old_values, clip)))

    def gradients(self, obs, returns, old_values=None, clip=None) -> dict[str, np.ndarray]:
        """``dL/dW`` of :meth:`loss`, as a dict like :meth:`get_weights` (not clipped)."""
        return self._gradients(*self._check_targets(obs, returns, old_values, clip))

    def gradient_sums(self, obs, returns) -> tuple[dict, dict]:
        """A part of a batch's value-fit gradient (see :meth:`Policy.gradient_sums`):
        ``(grads, {"value_loss": L, "steps": N})``, ``L`` summed over the steps."""
        x, g = self._check_targets(obs, returns)
        grads, loss, _ = self._gradient_sums(x, g)
        return grads, {"value_loss": loss, "steps": x.shape[0]}

    def update(self, obs, returns, old_values=None, clip=None) -> dict[str, float]:
        """Gradients, clipping (with ``max_grad_norm``) and one RMSprop step.

        Returns:
            ``value_loss`` and ``value_grad_norm`` (before clipping), computed before the step.
        """
        return self._update(*self._check_targets(obs, returns, old_values, clip))

    def _check_targets(self, obs, returns, old_values=None, clip=None):
        x = self._check_nonempty_obs(obs)
        targets = (x, self._check_vector("returns", returns, x.shape[0]))
        if old_values is None and clip is None:
            return targets
        if old_values is None or clip is None:
            raise ValueError("the clipped value loss needs both old_values and clip (or neither)")
        clip = valid.real("clip", clip, lambda c: c > 0, "> 0")
        old = self._check_vector("old_values", old_values, x.shape[0])
        return (*targets, old, self.dtype.type(clip))
