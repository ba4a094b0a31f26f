"""The TensorFlow/Keras backend: Keras layers and optimizer, ``tf.GradientTape``, ``tf.function``.

Imported only when asked for (``make_policy("tensorflow", ...)`` or
``pgrl.policies.TensorFlowPolicy``), so the NumPy path never loads TensorFlow.
"""

from __future__ import annotations

import os

import numpy as np

from pgrl import objectives
from pgrl.optim import RMSprop
from pgrl.policies.base import Policy, ValueNet
from pgrl.policies.threads import threads
from pgrl.sparse import SparseRows, is_mostly_zero


def _import_tensorflow():
    """``(keras, tf)``, imported with TensorFlow's start-up notices kept off the terminal.

    On a machine without a GPU, TF logs "Could not find cuda drivers" and "failed call to
    cuInit" (as an error). Some of these are written before TF's logging reads
    ``TF_CPP_MIN_LOG_LEVEL``, so stderr (file descriptor 2) is pointed at /dev/null for the
    import alone; Python exceptions still propagate.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    # Keras 3 picks its backend at first import; this module needs TensorFlow's.
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        import keras
        import tensorflow as tf
    except ImportError as e:  # pragma: no cover - exercised only without TensorFlow
        raise ImportError(
            f"the TensorFlow backend needs TensorFlow and Keras ({e}); install pgrl[tf]"
        ) from None
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
    backend = keras.backend.backend()
    if backend != "tensorflow":  # pragma: no cover
        raise ImportError(f"the TensorFlow backend needs KERAS_BACKEND=tensorflow, got {backend!r}")
    return keras, tf


keras, tf = _import_tensorflow()
raw = tf.raw_ops


def set_threads(n: int) -> None:
    """TensorFlow's intra- and inter-op thread pools get ``n`` threads each (before first use)."""
    try:
        tf.config.threading.set_intra_op_parallelism_threads(n)
        tf.config.threading.set_inter_op_parallelism_threads(n)
    except RuntimeError:  # the runtime is already up: its pools stay as they are
        pass


set_threads(threads())  # before TensorFlow's first computation (see pgrl.policies.threads)


class KerasRMSprop(keras.optimizers.Optimizer):
    """RMSprop as a Keras optimizer, with either epsilon placement.

    ``v <- rho * v + (1 - rho) * g**2``, then ``theta <- theta - lr * g / (sqrt(v) + eps)``
    (Karpathy, default) or ``theta - lr * g / sqrt(v + eps)`` (``epsilon_inside_sqrt=True``,
    identical to ``keras.optimizers.RMSprop(lr, rho=rho, epsilon=eps)``). Usable on any Keras
    model: ``model.compile(optimizer=KerasRMSprop(1e-4), ...)``.

    Unlike Keras's default, a float learning rate is kept in float64, so float64 models take
    exactly the step a float64 NumPy implementation takes.
    """

    def __init__(
        self,
        learning_rate=1e-4,
        rho: float = 0.99,
        epsilon: float = 1e-5,
        epsilon_inside_sqrt: bool = False,
        name: str = "pgrl_rmsprop",
        **kwargs,
    ):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        if isinstance(learning_rate, float | int) and not isinstance(learning_rate, bool):
            # Keras stores a float rate as a floatx (float32) variable: 1e-4 becomes
            # 9.99999975e-05, a 2.5e-9 relative error per step in float64 training.
            old = self._learning_rate
            self._untrack_variable(old)
            with keras.name_scope(self.name, caller=self):
                self._learning_rate = keras.Variable(
                    float(learning_rate), name="learning_rate", dtype="float64", trainable=False
                )
            self._track_variable(self._learning_rate)
        self.rho = float(rho)
        self.epsilon = float(epsilon)
        self.epsilon_inside_sqrt = bool(epsilon_inside_sqrt)

    @classmethod
    def from_rmsprop(cls, opt: RMSprop) -> KerasRMSprop:
        """The Keras optimizer that takes the steps of :class:`pgrl.optim.RMSprop` ``opt``."""
        return cls(
            learning_rate=opt.learning_rate,
            rho=opt.decay,
            epsilon=opt.epsilon,
            epsilon_inside_sqrt=opt.epsilon_inside_sqrt,
        )

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self._velocities = [self.add_variable_from_reference(v, "velocity") for v in var_list]

    def velocity(self, variable):
        """The running mean of squared gradients kept for ``variable``."""
        return self._velocities[self._get_variable_index(variable)]

    def update_step(self, gradient, variable, learning_rate):
        ops = keras.ops
        lr = ops.cast(learning_rate, variable.dtype)
        g = ops.cast(gradient, variable.dtype)
        v = self.velocity(variable)
        self.assign(
            v, ops.add(ops.multiply(self.rho, v), ops.multiply(1 - self.rho, ops.square(g)))
        )
        if self.epsilon_inside_sqrt:
            denom = ops.sqrt(ops.add(v, self.epsilon))
        else:
            denom = ops.add(ops.sqrt(v), self.epsilon)
        self.assign_sub(variable, ops.divide(ops.multiply(lr, g), denom))

    def get_config(self):
        config = super().get_config()
        config.update(
            rho=self.rho, epsilon=self.epsilon, epsilon_inside_sqrt=self.epsilon_inside_sqrt
        )
        return config


def forward(layers, x):
    """(N, n_logits) logits of the MLP: ``h_i = relu(h_{i-1} @ W_i + b_i)``, no ReLU on the last
    layer.

    ``layers`` is ``[(W1, b1 or None), ...]`` (variables or tensors); ``x`` is a dense (N, D)
    array or, for mostly-zero rows (Pong's frame differences), the tuple ``(indices, values,
    shape)`` of a ``tf.SparseTensor``: indices (nnz, 2) int64 in row-major order, values (nnz,),
    shape (2,) int64. The first layer's product then reads only the rows of W1 that the
    nonzeros select. Written with
    ``tf.raw_ops``, which take NumPy arrays as they are: called eagerly with a few rows, the
    public ops' Python layers would cost more than the arithmetic.
    """
    h = x
    for i, (w, b) in enumerate(layers):
        if i > 0:
            h = raw.Relu(features=h)
        if isinstance(h, tuple):
            indices, values, shape = h
            h = raw.SparseTensorDenseMatMul(a_indices=indices, a_values=values, a_shape=shape, b=w)
        else:
            h = raw.MatMul(a=h, b=w)
        if b is not None:
            h = raw.AddV2(x=h, y=b)
    return h


def clip_by_global_norm(grads: list, max_norm: float | None) -> tuple[list, object]:
    """``(g * c / max(norm, c) for each g, norm)`` in TensorFlow ops: the rule of
    :func:`pgrl.optim.clip_by_global_norm` (and of ``tf.clip_by_global_norm``, whose
    ``c * min(1 / norm, 1 / c)`` is not exactly 1 under the threshold)."""
    norm = tf.sqrt(tf.add_n([tf.reduce_sum(tf.square(g)) for g in grads]))
    if max_norm is None:
        return grads, norm
    c = tf.constant(max_norm, grads[0].dtype)
    scale = c / tf.maximum(norm, c)
    return [g * scale for g in grads], norm


def _lazy_concrete(fn, *specs):
    """A callable that traces ``fn`` for ``specs`` on first use, then calls that trace."""
    traced = []

    def call(*args):
        if not traced:
            traced.append(tf.function(fn).get_concrete_function(*specs))
        return traced[0](*args)

    return call


class KerasNetwork:
    """What both TensorFlow networks share: Keras ``Dense`` layers holding the variables, the
    Keras optimizer, weights and optimizer state, eager and traced forward passes.

    Mixed into a :class:`pgrl.policies.base.Network` subclass, whose ``__init__`` runs first and
    then calls :meth:`_init_keras`.
    """

    def _init_keras(self, output_name: str, model_name: str) -> None:
        dt = self.dtype.name
        layers = [keras.Input((self.obs_dim,), dtype=dt)]
        for i, h in enumerate(self.hidden_sizes, start=1):
            layers.append(
                keras.layers.Dense(
                    h, activation="relu", use_bias=self.bias, dtype=dt, name=f"hidden{i}"
                )
            )
        n_outputs = self.shapes[f"W{len(self.hidden_sizes) + 1}"][1]
        layers.append(keras.layers.Dense(n_outputs, use_bias=self.bias, dtype=dt, name=output_name))
        self.model = keras.Sequential(layers, name=model_name)
        self._vars = {}
        for i, layer in enumerate(self.model.layers, start=1):
            self._vars[f"W{i}"] = layer.kernel
            if self.bias:
                self._vars[f"b{i}"] = layer.bias
        for name, shape in self.shapes.items():  # the head's own parameters (log_std)
            if name not in self._vars:
                self._vars[name] = keras.Variable(np.zeros(shape), dtype=dt, name=name)
        self._var_list = [self._vars[name] for name in self.shapes]
        self.keras_optimizer = KerasRMSprop.from_rmsprop(self.optimizer)
        self.keras_optimizer.build(self._var_list)
        self._snapshot = None  # the weights as tensors, for eager forward passes
        self._set_weights(self.initial_weights())
        grad_specs = [tf.TensorSpec(v.shape, dt) for v in self._var_list]
        self._tf_apply = _lazy_concrete(self._graph_apply, grad_specs)
        # sparse obs: ((row, column) of each nonzero, its value, (rows, columns))
        self._sparse_spec = (
            tf.TensorSpec([None, 2], tf.int64),
            tf.TensorSpec([None], dt),
            tf.TensorSpec([2], tf.int64),
        )

    def _obs_spec(self, sparse: bool):
        return self._sparse_spec if sparse else tf.TensorSpec([None, self.obs_dim], self.dtype.name)

    def _layers(self, weights: dict) -> list:
        """``[(W1, b1 or None), ...]`` from a dict of weights (variables or tensors)."""
        n_layers = len(self.hidden_sizes) + 1
        return [(weights[f"W{i}"], weights.get(f"b{i}")) for i in range(1, n_layers + 1)]

    def _tape_gradients(self, loss_fn, *args):
        """``(loss, outputs, grads)``: ``loss_fn(*args) -> (loss, outputs)`` differentiated by
        ``tf.GradientTape`` with respect to every variable."""
        with tf.GradientTape() as tape:
            loss, out = loss_fn(*args)
        grads = tape.gradient(loss, self._var_list)
        # the sparse path's kernel gradient arrives as IndexedSlices: densify, as Keras would
        return loss, out, [tf.convert_to_tensor(g) for g in grads]

    def _clip_and_apply(self, grads):
        """Clip (``max_grad_norm``), one Keras RMSprop step; the norm before clipping."""
        grads, norm = clip_by_global_norm(grads, self.max_grad_norm)
        self.keras_optimizer.apply(grads, self._var_list)
        return norm

    def _graph_apply(self, grads):
        self._clip_and_apply(grads)

    def _trace(self, *target_specs, **extra) -> None:
        """Graphs of ``_graph_gradients`` and ``_graph_update`` (and ``extra``, name -> function
        of obs and the first target) for a batch ``(obs, *targets)``, dense or sparse; each
        traced on its first call. Called once per set of targets a network takes."""
        self._tf = getattr(self, "_tf", {})
        for sparse in (False, True):
            batch = (self._obs_spec(sparse), *target_specs)
            n = len(target_specs)
            self._tf["gradients", sparse, n] = _lazy_concrete(self._graph_gradients, *batch)
            self._tf["update", sparse, n] = _lazy_concrete(self._graph_update, *batch)
            self._tf["sums", sparse, n] = _lazy_concrete(self._graph_sums, *batch)
            for name, fn in extra.items():
                self._tf[name, sparse, 1] = _lazy_concrete(fn, *batch[:2])

    def _graph_gradients(self, obs, *targets):
        return self._tape_gradients(self._loss_graph, obs, *targets)

    def _graph_sums(self, obs, *targets):
        return self._tape_gradients(self._sum_loss_graph, obs, *targets)

    def _loss_graph(self, obs, *targets):
        """``L`` (divided by N with ``reduction="mean"``) and the outputs."""
        loss, out = self._sum_loss_graph(obs, *targets)
        if self.reduction == "mean":
            loss = loss / tf.cast(tf.shape(out)[0], loss.dtype)
        return loss, out

    def _gradient_sums(self, obs, *targets):
        loss, out, grads = self._graph_call("sums", obs, *targets)
        grads = {name: g.numpy() for name, g in zip(self.shapes, grads, strict=True)}
        return grads, float(loss), out.numpy()

    def _loss(self, obs, *targets):
        return float(self._graph_call("gradients", obs, *targets)[0])

    def _gradients(self, obs, *targets):
        grads = self._graph_call("gradients", obs, *targets)[2]
        return {name: g.numpy() for name, g in zip(self.shapes, grads, strict=True)}

    def _update(self, obs, *targets):
        stats = self._graph_call("update", obs, *targets)
        self._snapshot = None
        return {k: float(v) for k, v in stats.items()}

    def _get_weights(self):
        return {name: v.numpy() for name, v in self._vars.items()}

    def _set_weights(self, weights):
        for name, w in weights.items():
            self._vars[name].assign(w)
        self._snapshot = None

    def _inputs(self, obs):
        """``(x, sparse)``: dense floats as they are; SparseRows, and integer rows that are mostly
        zero (Pong's frame differences), as the ``(indices, values, shape)`` arrays of a sparse
        tensor, for :func:`forward`'s sparse first layer."""
        if isinstance(obs, SparseRows):
            rows, cols, values = obs.row_ids(), obs.indices, obs.values
        elif is_mostly_zero(obs):
            flat = np.flatnonzero(obs.ravel() != 0)  # row-major; ~5x faster than on int8
            rows, cols = np.divmod(flat, obs.shape[1])
            values = obs.ravel()[flat]
        else:
            return obs.astype(self.dtype, copy=False), False
        indices = np.empty((len(values), 2), dtype=np.int64)
        indices[:, 0], indices[:, 1] = rows, cols
        return (indices, values.astype(self.dtype), np.array(obs.shape, np.int64)), True

    def _graph_call(self, name, obs, *vectors):
        x, sparse = self._inputs(obs)
        x = tuple(tf.constant(a) for a in x) if sparse else tf.constant(x)
        return self._tf[name, sparse, len(vectors)](x, *(tf.constant(v) for v in vectors))

    def _eager_outputs(self, obs):
        """(N, n_outputs) from eager ops on a copy of the weights (see
        :class:`TensorFlowPolicy`)."""
        if self._snapshot is None:
            self._snapshot = {k: tf.constant(v.numpy()) for k, v in self._vars.items()}
        return forward(self._layers(self._snapshot), self._inputs(obs)[0])

    def _outputs(self, obs):
        return self._eager_outputs(obs).numpy()

    def _apply_gradients(self, grads):
        self._tf_apply([tf.constant(grads[name]) for name in self.shapes])
        self._snapshot = None

    def _get_optimizer_state(self):
        opt = self.keras_optimizer
        state = {f"v_{name}": opt.velocity(v).numpy() for name, v in self._vars.items()}
        state["step"] = np.int64(opt.iterations.numpy())
        return state

    def _set_optimizer_state(self, velocities, step):
        opt = self.keras_optimizer
        for name, v in velocities.items():
            opt.velocity(self._vars[name]).assign(v)
        opt.iterations.assign(step)


class TensorFlowPolicy(KerasNetwork, Policy):
    """The policy network as Keras ``Dense`` layers; see :class:`pgrl.policies.base.Policy`.

    ``self.model`` is a ``keras.Sequential`` mapping (N, obs_dim) observations to the (N, k)
    outputs of the head's distribution, for users who want to inspect or reuse it; its variables
    are the policy's. pgrl computes with :func:`forward` on them: traced (``tf.function``,
    batch-size-agnostic, traced once) for gradients and updates, and called eagerly, on a copy of
    the weights read once after each change, for action probabilities. The rollout asks for them
    every step with 1 to ``num_envs`` rows, and a call of a traced function costs more before any
    op runs than the handful of eager ops of a small network in all (``python scripts/bench.py
    policy`` prints both, per call).
    """

    backend = "tensorflow"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        names = {"bernoulli": "logit", "categorical": "logits", "gaussian": "mu"}
        self._init_keras(names[self.distribution.name], "pgrl_policy")
        vec_spec = tf.TensorSpec([None], self.dtype.name)
        # actions: 0/1 in the policy's dtype (BCE labels), int64 indices (sparse CE labels), or
        # (N, d) in the policy's dtype (gaussian)
        shape = [None, *self.distribution.action_shape]
        kind = self.distribution.action_kind
        action_spec = tf.TensorSpec(shape, self.dtype.name if kind == "float" else tf.int64)
        self._trace(action_spec, vec_spec, log_probs=self._graph_log_probs)
        # PPO: old log-probs and the clip range as well
        self._trace(action_spec, vec_spec, vec_spec, tf.TensorSpec([], self.dtype.name))

    # ----- graphs -----

    def _head_outputs(self, weights, obs):
        """The head's input: the network's outputs with the head's own parameters."""
        return self.distribution.tf_outputs(forward(self._layers(weights), obs), weights)

    def _eager_outputs(self, obs):
        out = super()._eager_outputs(obs)
        return self.distribution.tf_outputs(out, self._snapshot)

    def _sum_loss_graph(self, obs, actions, advantages, *ppo):
        """``L`` summed over the steps, from the objective's per-step terms (REINFORCE's, or
        PPO's surrogate with ``old_log_probs``) and the entropy bonus, and the outputs."""
        dist = self.distribution
        out = self._head_outputs(self._vars, obs)
        z = dist.tf_logits(out)
        log_probs = dist.tf_log_prob(z, actions)
        if ppo:
            terms = objectives.tf_ppo(log_probs, advantages, *ppo)
        else:
            terms = objectives.tf_reinforce(log_probs, advantages)
        loss = tf.reduce_sum(terms)
        if self.entropy_coef:
            loss = loss - self.entropy_coef * tf.reduce_sum(dist.tf_entropy(z))
        return loss, out

    def _graph_update(self, obs, actions, advantages, *ppo):  # ppo: (old_log_probs, clip)
        loss, out, grads = self._graph_gradients(obs, actions, advantages, *ppo)
        dist = self.distribution
        z = dist.tf_logits(out)
        stats = {
            "loss": loss,
            "grad_norm": self._clip_and_apply(grads),
            "mean_prob": dist.tf_prob_stat(z, actions),
            "entropy": tf.reduce_mean(dist.tf_entropy(z)),
        }
        if ppo:
            stats.update(objectives.tf_ppo_stats(dist.tf_log_prob(z, actions), *ppo))
        return stats

    def _graph_log_probs(self, obs, actions):
        dist = self.distribution
        return dist.tf_log_prob(dist.tf_logits(self._head_outputs(self._vars, obs)), actions)

    # ----- backend hooks -----

    def _probs(self, obs):
        dist = self.distribution
        return dist.logits(dist.tf_probs(self._eager_outputs(obs)).numpy())

    def _log_probs(self, obs, actions):
        return self._graph_call("log_probs", obs, actions).numpy()


class TensorFlowValueNet(KerasNetwork, ValueNet):
    """A value network ``V(s)`` as Keras ``Dense`` layers, differentiated by
    ``tf.GradientTape``; see :class:`pgrl.policies.base.ValueNet`."""

    backend = "tensorflow"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_keras("value", "pgrl_value")
        vec_spec = tf.TensorSpec([None], self.dtype.name)
        self._trace(vec_spec)
        self._trace(vec_spec, vec_spec, tf.TensorSpec([], self.dtype.name))  # clipped fit

    def _sum_loss_graph(self, obs, returns, *clipped):  # clipped: (old_values, clip)
        out = forward(self._layers(self._vars), obs)
        v = out[:, 0]
        if clipped:
            terms = objectives.tf_clipped_value_loss(v, returns, *clipped)
        else:
            terms = objectives.tf_value_loss(v, returns)
        return tf.reduce_sum(terms), out

    def _graph_update(self, obs, *targets):
        loss, _, grads = self._graph_gradients(obs, *targets)
        return {"value_loss": loss, "value_grad_norm": self._clip_and_apply(grads)}
