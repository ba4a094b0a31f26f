"""RMSprop: NumPy step vs the gist's formula, NumPy vs TF backend, and vs Keras's own RMSprop."""

import numpy as np
import pytest

from pgrl.optim import RMSprop
from pgrl.policies import make_policy

SHAPES = dict(obs_dim=5, hidden_sizes=(6, 4), bias=True)


def gradient_sequence(policy, steps, seed=0):
    """Gradients of varied magnitude, some tiny (where eps placement matters most)."""
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        scale = 10.0 ** rng.uniform(-6, 1)
        yield {name: scale * rng.standard_normal(shape) for name, shape in policy.shapes.items()}


def test_numpy_step_matches_karpathy_gist_formula():
    lr, decay, eps = 1e-3, 0.99, 1e-5
    policy = make_policy("numpy", optimizer=RMSprop(lr, decay, eps), seed=3, **SHAPES)
    model = policy.get_weights()
    rmsprop_cache = {k: np.zeros_like(v) for k, v in model.items()}
    for grads in gradient_sequence(policy, 200):
        policy.apply_gradients(grads)
        for k, g in grads.items():
            # the gist (ascent on log-prob, g there is -g here):
            #   rmsprop_cache[k] = decay_rate * rmsprop_cache[k] + (1 - decay_rate) * g**2
            #   model[k] += learning_rate * g / (np.sqrt(rmsprop_cache[k]) + 1e-5)
            rmsprop_cache[k] = decay * rmsprop_cache[k] + (1 - decay) * g**2
            model[k] += lr * -g / (np.sqrt(rmsprop_cache[k]) + eps)
    state = policy.get_optimizer_state()
    assert state["step"] == 200
    for k in model:
        np.testing.assert_allclose(policy.get_weights()[k], model[k], rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(state[f"v_{k}"], rmsprop_cache[k], rtol=1e-12)


@pytest.mark.parametrize("inside", [False, True])
def test_backends_take_the_same_200_steps(inside):
    opt = RMSprop(learning_rate=1e-3, decay=0.9, epsilon=1e-5, epsilon_inside_sqrt=inside)
    np_policy = make_policy("numpy", optimizer=opt, seed=0, **SHAPES)
    tf_policy = make_policy("tensorflow", optimizer=opt, seed=0, **SHAPES)
    start = np_policy.get_weights()
    for grads in gradient_sequence(np_policy, 200):
        np_policy.apply_gradients(grads)
        tf_policy.apply_gradients(grads)
    w_np, w_tf = np_policy.get_weights(), tf_policy.get_weights()
    s_np, s_tf = np_policy.get_optimizer_state(), tf_policy.get_optimizer_state()
    assert s_np["step"] == s_tf["step"] == 200
    for k in w_np:
        assert np.max(np.abs(w_np[k] - start[k])) > 1e-2  # the weights did move
        np.testing.assert_allclose(w_tf[k], w_np[k], rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(s_tf[f"v_{k}"], s_np[f"v_{k}"], rtol=1e-10)


def test_epsilon_placement_matters_for_small_gradients():
    """DESIGN.md cause 2: with |g| ~ 1e-6, sqrt(v)+eps and sqrt(v+eps) differ ~100x in step."""
    steps = {}
    for inside in (False, True):
        opt = RMSprop(learning_rate=1e-3, decay=0.99, epsilon=1e-5, epsilon_inside_sqrt=inside)
        policy = make_policy("numpy", optimizer=opt, obs_dim=2, hidden_sizes=(2,))
        before = policy.get_weights()["W1"]
        policy.apply_gradients({"W1": np.full((2, 2), 1e-6), "W2": np.full((2, 1), 1e-6)})
        steps[inside] = np.abs(policy.get_weights()["W1"] - before).max()
    assert steps[False] / steps[True] > 30


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("backend", ["numpy", "tensorflow"])
def test_keras_form_matches_keras_rmsprop(backend, dtype):
    import keras
    import tensorflow as tf

    lr, rho, eps = 1e-3, 0.9, 1e-7
    opt = RMSprop(learning_rate=lr, decay=rho, epsilon=eps, epsilon_inside_sqrt=True)
    policy = make_policy(backend, optimizer=opt, seed=1, dtype=dtype, **SHAPES)
    variables = {k: tf.Variable(v) for k, v in policy.get_weights().items()}
    reference = keras.optimizers.RMSprop(learning_rate=lr, rho=rho, epsilon=eps)
    for grads in gradient_sequence(policy, 200, seed=1):
        policy.apply_gradients(grads)
        reference.apply_gradients(
            [(tf.constant(grads[k], dtype=dtype), variables[k]) for k in variables]
        )
    for k, v in variables.items():
        np.testing.assert_allclose(policy.get_weights()[k], v.numpy(), rtol=1e-6, atol=1e-6)


def test_keras_rmsprop_on_a_users_keras_model():
    import keras

    from pgrl.policies.tf_policy import KerasRMSprop

    opt = KerasRMSprop(learning_rate=0.05, rho=0.9, epsilon=1e-5)
    config = opt.get_config()
    assert config["epsilon_inside_sqrt"] is False and config["rho"] == 0.9
    assert KerasRMSprop.from_config(config).get_config() == config
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer=opt, loss="mse")
    x = np.random.default_rng(0).standard_normal((64, 3)).astype("float32")
    y = x @ np.array([[1.0], [-2.0], [0.5]], dtype="float32")
    history = model.fit(x, y, epochs=100, batch_size=64, verbose=0)
    assert history.history["loss"][-1] < 0.01 * history.history["loss"][0]
    opt.learning_rate = 1e-4  # settable like any Keras optimizer's, kept in float64
    assert opt.learning_rate.numpy() == 1e-4


def test_optimizer_state_moves_between_backends():
    """Continue a run on the other backend: same state in, same step out."""
    opt = RMSprop(learning_rate=1e-3)
    rng = np.random.default_rng(0)
    obs = rng.standard_normal((20, 5))
    actions = (rng.random(20) < 0.5).astype(float)
    advantages = rng.standard_normal(20)
    source = make_policy("numpy", optimizer=opt, seed=2, **SHAPES)
    for _ in range(3):
        source.update(obs, actions, advantages)
    target = make_policy("tensorflow", optimizer=opt, seed=99, **SHAPES)
    target.set_weights(source.get_weights())
    target.set_optimizer_state(source.get_optimizer_state())
    assert target.get_optimizer_state()["step"] == 3
    source.update(obs, actions, advantages)
    target.update(obs, actions, advantages)
    for k, w in source.get_weights().items():
        np.testing.assert_allclose(target.get_weights()[k], w, rtol=1e-10, atol=1e-12)
