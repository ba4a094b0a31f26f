"""The TensorFlow/Keras backend: Keras layers, ``tf.GradientTape``, ``tf.function``.

Imported only when asked for (``make_policy("tensorflow", ...)`` or
``pgrl.policies.TensorFlowPolicy``), so the NumPy path never loads TensorFlow.
"""

from __future__ import annotations

import os

import numpy as np

from pgrl.policies.base import Policy, init_weights
from pgrl.sparse import SparseRows, is_mostly_zero

# Keras 3 picks its backend at first import; this module needs TensorFlow's.
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# TF logs "failed call to cuInit" as an error on every machine without a GPU.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
try:
    import keras
    import tensorflow as tf
except ImportError as e:  # pragma: no cover - exercised only without TensorFlow
    raise ImportError(
        f"the TensorFlow backend needs TensorFlow and Keras ({e}); install pgrl[tf]"
    ) from None
if keras.backend.backend() != "tensorflow":  # pragma: no cover
    raise ImportError(
        f"the TensorFlow backend needs KERAS_BACKEND=tensorflow, got {keras.backend.backend()!r}"
    )


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


def _lazy_concrete(fn, *specs):
    """A callable that traces ``fn`` for ``specs`` on first use, then calls that trace."""
    traced = []

    def call(*args):
        if not traced:
            traced.append(tf.function(fn).get_concrete_function(*specs))
        return traced[0](*args)

    return call


class TensorFlowPolicy(Policy):
    """The policy network as Keras ``Dense`` layers; see :class:`pgrl.policies.base.Policy`.

    ``self.model`` is a ``keras.Sequential`` mapping (N, obs_dim) observations to (N, 1) logits,
    for users who want to inspect or reuse it. Forward, gradient and update are each one
    ``tf.function`` with a batch-size-agnostic signature, traced once.
    """

    backend = "tensorflow"

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
        dt = self.dtype.name
        layers = [keras.Input((self.obs_dim,), dtype=dt)]
        for i, h in enumerate(self.hidden_sizes, start=1):
            layers.append(
                keras.layers.Dense(
                    h, activation="relu", use_bias=self.bias, dtype=dt, name=f"hidden{i}"
                )
            )
        layers.append(keras.layers.Dense(1, use_bias=self.bias, dtype=dt, name="logit"))
        self.model = keras.Sequential(layers, name="pgrl_policy")
        self._vars = {}
        for i, layer in enumerate(self.model.layers, start=1):
            self._vars[f"W{i}"] = layer.kernel
            if self.bias:
                self._vars[f"b{i}"] = layer.bias
        self._var_list = [self._vars[name] for name in self.shapes]
        self.keras_optimizer = self.optimizer.to_keras()
        self.keras_optimizer.build(self._var_list)
        self._set_weights(
            init_weights(self.obs_dim, self.hidden_sizes, self.bias, seed, self.dtype.name)
        )

        # One concrete function per operation and input kind (dense or sparse obs), traced once
        # for any batch size. Calling the concrete function directly skips tf.function's
        # argument matching: ~150 us per call instead of ~330 us, which is most of the cost of
        # a one-observation action_prob (CartPole's whole step).
        vec_spec = tf.TensorSpec([None], dt)
        grad_specs = [tf.TensorSpec(v.shape, dt) for v in self._var_list]
        self._tf_apply = _lazy_concrete(self._graph_apply, grad_specs)
        self._tf = {}
        # sparse obs: (row of each nonzero, its column, its value, number of rows)
        sparse_spec = (
            tf.TensorSpec([None], tf.int32),
            tf.TensorSpec([None], tf.int32),
            tf.TensorSpec([None], dt),
            tf.TensorSpec([], tf.int32),
        )
        for sparse in (False, True):
            obs_spec = sparse_spec if sparse else tf.TensorSpec([None, self.obs_dim], dt)
            batch = (obs_spec, vec_spec, vec_spec)
            self._tf["action_prob", sparse] = _lazy_concrete(self._graph_action_prob, obs_spec)
            self._tf["gradients", sparse] = _lazy_concrete(self._graph_gradients, *batch)
            self._tf["update", sparse] = _lazy_concrete(self._graph_update, *batch)

    # ----- graphs -----

    def _logits(self, obs):
        """(N,) logits; a sparse batch enters the first Dense layer by gathering rows of its
        kernel (what a 6400-wide frame difference with ~25 nonzeros needs), then the model's
        remaining layers run as usual."""
        if not isinstance(obs, tuple):
            return self.model(obs)[:, 0]
        first = self.model.layers[0]
        rows, cols, values, n_rows = obs
        terms = tf.gather(first.kernel, cols) * values[:, None]
        h = tf.math.unsorted_segment_sum(terms, rows, n_rows)
        if self.bias:
            h = h + first.bias
        h = first.activation(h)
        for layer in self.model.layers[1:]:
            h = layer(h)
        return h[:, 0]

    def _graph_action_prob(self, obs):
        return tf.sigmoid(self._logits(obs))

    def _loss(self, obs, actions, advantages):
        z = self._logits(obs)
        bce = tf.nn.sigmoid_cross_entropy_with_logits(labels=actions, logits=z)
        loss = tf.reduce_sum(advantages * bce)
        if self.reduction == "mean":
            loss = loss / tf.cast(tf.shape(z)[0], loss.dtype)
        return loss, z

    def _graph_gradients(self, obs, actions, advantages):
        with tf.GradientTape() as tape:
            loss, z = self._loss(obs, actions, advantages)
        grads = tape.gradient(loss, self._var_list)
        # the sparse path's kernel gradient arrives as IndexedSlices: densify, as Keras would
        return loss, z, [tf.convert_to_tensor(g) for g in grads]

    def _graph_apply(self, grads):
        self.keras_optimizer.apply(grads, self._var_list)

    def _graph_update(self, obs, actions, advantages):
        loss, z, grads = self._graph_gradients(obs, actions, advantages)
        p = tf.sigmoid(z)
        entropy = p * tf.math.softplus(-z) + (1 - p) * tf.math.softplus(z)
        stats = {
            "loss": loss,
            "grad_norm": tf.linalg.global_norm(grads),
            "mean_prob": tf.reduce_mean(p),
            "entropy": tf.reduce_mean(entropy),
        }
        self.keras_optimizer.apply(grads, self._var_list)
        return stats

    # ----- backend hooks -----

    def _get_weights(self):
        return {name: v.numpy() for name, v in self._vars.items()}

    def _set_weights(self, weights):
        for name, w in weights.items():
            self._vars[name].assign(w)

    def _to_tf(self, obs):
        """Dense floats as a tensor; SparseRows, and integer rows that are mostly zero (Pong's
        frame differences), as (rows, cols, values, n) tensors for the gathering first layer."""
        if isinstance(obs, SparseRows):
            rows, cols, values = obs.row_ids(), obs.indices, obs.values
        elif is_mostly_zero(obs):
            rows, cols = np.nonzero(obs)  # row-major, as SparseRows.from_dense
            values = obs[rows, cols]
        else:
            return tf.constant(obs, dtype=self.dtype), False
        parts = (
            rows.astype(np.int32),
            cols.astype(np.int32),
            values.astype(self.dtype),
            np.int32(len(obs)),
        )
        return tuple(tf.constant(a) for a in parts), True

    def _action_prob(self, obs):
        x, sparse = self._to_tf(obs)
        return self._tf["action_prob", sparse](x).numpy()

    def rollout_fn(self):
        """``obs -> P(action = 1)`` for one batch of rollout steps, as eager TensorFlow ops on a
        snapshot of the weights.

        A rollout step has 1 to ``num_envs`` rows. On this 2-core VM a call of a traced function
        costs ~120 us before any op runs, and ~400 us for the policy in a Pong rollout, where the
        emulator evicts TF's working set between calls; the same ops called one by one, ~10 us
        each, cost ~100-150 us. Reading the variables once per batch also keeps the step off
        the variables: gathering rows of a variable (``ResourceGather``) costs ~70 us, of a
        tensor ~25 us. Same ops as the traced graph except the sparse first layer, a
        ``MatMul`` of the values with the gathered kernel rows instead of a segment sum, and
        the biases of dense rows, folded into the products (below):
        the numbers agree with :meth:`action_prob` to rounding (tests: 1e-12 in float64; with
        hundreds of nonzeros per row the two differ in the last bit). The sparse product
        builds an (N, nonzeros of all N rows) matrix: right for the few rows of a rollout step.
        """
        raw = tf.raw_ops
        dt = self.dtype
        layers = [
            (
                self._vars[f"W{i}"].value.read_value(),
                self._vars[f"b{i}"].value.read_value() if self.bias else None,
            )
            for i in range(1, len(self.hidden_sizes) + 2)
        ]
        (w1, b1), rest = layers[0], layers[1:]
        # Dense rows with biases: each bias folded into its product as one more input row, fed
        # by a constant 1 that each hidden layer passes on (ReLU(1) = 1): 2 ops per layer
        # instead of 3 (~60 instead of ~80 us for CartPole's net). The bias then joins the sum
        # inside the product, so the numbers agree to rounding, as above.
        folded = []
        if self.bias:
            for i, (w, b) in enumerate(layers):
                w, b = w.numpy(), b.numpy()
                out = w.shape[1] + (i < len(layers) - 1)
                wb = np.zeros((w.shape[0] + 1, out), dtype=dt)
                wb[:-1, : w.shape[1]], wb[-1, : w.shape[1]] = w, b
                if out > w.shape[1]:
                    wb[-1, -1] = 1.0
                folded.append(tf.constant(wb))

        def action_prob(obs: np.ndarray) -> np.ndarray:
            if is_mostly_zero(obs):
                # h = V @ W1[cols]: V (N, nnz) holds each row's values in that row's columns
                flat = obs.ravel()
                nz = np.flatnonzero(flat != 0)
                n = obs.shape[0]
                if n == 1:
                    cols, v = nz, flat[nz].astype(dt)[None]
                else:
                    rows, cols = np.divmod(nz, obs.shape[1])
                    v = np.zeros((n, nz.size), dt)
                    v[rows, np.arange(nz.size)] = flat[nz]
                h = raw.MatMul(a=v, b=raw.GatherV2(params=w1, indices=cols, axis=0))
            elif folded:
                n, d = obs.shape
                h = np.empty((n, d + 1), dtype=dt)
                h[:, :d], h[:, d] = obs, 1.0
                for wb in folded[:-1]:
                    h = raw.Relu(features=raw.MatMul(a=h, b=wb))
                return raw.Sigmoid(x=raw.MatMul(a=h, b=folded[-1])).numpy()[:, 0]
            else:
                h = raw.MatMul(a=obs.astype(dt, copy=False), b=w1)
            b = b1
            for w_next, b_next in rest:  # bias and ReLU of this layer, product of the next
                if b is not None:
                    h = raw.AddV2(x=h, y=b)
                h = raw.MatMul(a=raw.Relu(features=h), b=w_next)
                b = b_next
            if b is not None:
                h = raw.AddV2(x=h, y=b)
            return raw.Sigmoid(x=h).numpy()[:, 0]

        return action_prob

    def _gradients(self, obs, actions, advantages):
        x, sparse = self._to_tf(obs)
        grads = self._tf["gradients", sparse](x, tf.constant(actions), tf.constant(advantages))[2]
        return {name: g.numpy() for name, g in zip(self.shapes, grads, strict=True)}

    def _apply_gradients(self, grads):
        self._tf_apply([tf.constant(grads[name]) for name in self.shapes])

    def _update(self, obs, actions, advantages):
        x, sparse = self._to_tf(obs)
        stats = self._tf["update", sparse](x, tf.constant(actions), tf.constant(advantages))
        return {k: float(v) for k, v in stats.items()}

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
