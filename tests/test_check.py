"""pgrl check with the categorical head: parity rows, finite differences, failures named, and
every --explain figure against an independent computation here (TensorFlow's GradientTape for
the correct gradients, a hand-written backward pass for each mistake, RMSprop's first step by
hand)."""

import os
import re

import numpy as np
import pytest
from test_compare import _agree_to_3_digits as agree_to_3_digits
from test_compare import _printed as printed
from test_compare import _reference_first_step as first_step

from pgrl.check import synthetic_batch
from pgrl.cli import main as cli_main
from pgrl.config import load_config

ACROBOT, CARTPOLE = "configs/acrobot.toml", "configs/cartpole.toml"
OBS_DIM = {ACROBOT: 6, CARTPOLE: 4}
N_ACTIONS = {ACROBOT: 3, CARTPOLE: 2}


@pytest.fixture(scope="module")
def tf():
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    return pytest.importorskip("tensorflow")


def test_check_covers_the_categorical_head(capsys):
    assert cli_main(["check", ACROBOT]) == 0
    out = capsys.readouterr().out
    assert "categorical head, 3 actions" in out and "PASS: the backends agree" in out
    for row in ("action_probs", "gradient W2", "gradient b2", "RMSprop step W2", "finite diff. W2"):
        assert re.search(rf"^{re.escape(row)} .* ok$", out, re.M), row


@pytest.mark.parametrize("backend", ["numpy", "tensorflow"])
def test_check_fails_and_names_the_layer_for_a_wrong_categorical_backend(
    monkeypatch, capsys, backend
):
    if backend == "numpy":
        from pgrl.policies.numpy_policy import NumpyPolicy as cls
    else:
        from pgrl.policies.tf_policy import TensorFlowPolicy as cls
    real = cls._gradients

    def perturbed(self, obs, actions, advantages):
        grads = real(self, obs, actions, advantages)
        grads["W2"] = grads["W2"] * (1 + 1e-6)
        return grads

    monkeypatch.setattr(cls, "_gradients", perturbed)
    assert cli_main(["check", ACROBOT]) == 1
    out = capsys.readouterr().out
    failed = out.split("FAIL: ")[-1].splitlines()[0].split(", ")
    # a wrong NumPy backward pass also fails against finite differences; a wrong TF one does not;
    # the entropy bonus's gradients, computed by the same backward pass, fail likewise
    if backend == "numpy":
        expected = ["gradient W2", "finite diff. W2", "entropy bonus grads", "entropy finite diff."]
    else:
        expected = ["gradient W2", "entropy bonus grads"]
    assert failed[-1].endswith(" outside tolerance")
    assert [f.removesuffix(" outside tolerance") for f in failed] == expected


# ----- --explain, computed independently -----


def reference_weights(cfg, obs_dim, n_logits):
    """randn(fan_in, fan_out) / sqrt(fan_in) from default_rng(train.seed), biases zero."""
    sizes = [obs_dim, *cfg.policy.hidden_sizes, n_logits]
    rng = np.random.default_rng(cfg.train.seed)
    w = {}
    for i in range(1, len(sizes)):
        w[f"W{i}"] = rng.standard_normal((sizes[i - 1], sizes[i])) / np.sqrt(sizes[i - 1])
        if cfg.policy.bias:
            w[f"b{i}"] = np.zeros(sizes[i])
    return w


def hand_forward(w, x):
    n_layers = sum(k[0] == "W" for k in w)
    hs, h = [x], x
    for i in range(1, n_layers + 1):
        h = h @ w[f"W{i}"] + w.get(f"b{i}", 0)
        if i < n_layers:
            h = np.maximum(h, 0)
            hs.append(h)
    return hs, h


def hand_backward(w, hs, dz, mask=True):
    """dL/dW from dL/dz (N, k); ``mask=False``: the ReLU mask that masks nothing."""
    grads, dh = {}, dz
    for i in range(len(hs), 0, -1):
        grads[f"W{i}"] = hs[i - 1].T @ dh
        if f"b{i}" in w:
            grads[f"b{i}"] = dh.sum(axis=0)
        if i > 1:
            dh = dh @ w[f"W{i}"].T
            if mask:
                dh = dh * (hs[i - 1] > 0)
    return {k: grads[k] for k in w}


def tf_gradients(tf, w, x, actions, adv, categorical, mean):
    params = {k: tf.Variable(v) for k, v in w.items()}
    n_layers = sum(k[0] == "W" for k in w)
    with tf.GradientTape() as tape:
        z = tf.constant(x)
        for i in range(1, n_layers + 1):
            z = z @ params[f"W{i}"] + (params[f"b{i}"] if f"b{i}" in params else 0)
            if i < n_layers:
                z = tf.nn.relu(z)
        if categorical:
            ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=actions, logits=z)
        else:
            ce = tf.nn.sigmoid_cross_entropy_with_logits(labels=actions * 1.0, logits=z[:, 0])
        loss = tf.reduce_sum(adv * ce) / (len(adv) if mean else 1)
    g = tape.gradient(loss, params)
    return {k: g[k].numpy() for k in w}


@pytest.mark.parametrize(
    "config, overrides, seed",
    [
        (ACROBOT, [], 0),
        (ACROBOT, ["optimizer.epsilon_inside_sqrt=true", "policy.reduction=mean"], 3),
        (CARTPOLE, ["policy.head=categorical"], 1),
        (CARTPOLE, [], 0),
    ],
    ids=["acrobot", "acrobot-keras-mean", "cartpole-softmax", "cartpole-bernoulli"],
)
def test_check_explain_figures(tf, capsys, config, overrides, seed):
    sets = [arg for o in overrides for arg in ("--set", o)]
    assert cli_main(["check", config, "--explain", "--seed", str(seed), *sets]) == 0
    out = capsys.readouterr().out

    cfg = load_config(config, overrides)
    o, p = cfg.optimizer, cfg.policy
    categorical = p.head == "categorical"
    obs_dim, n_actions = OBS_DIM[config], N_ACTIONS[config]
    obs, actions, adv = synthetic_batch(cfg, obs_dim, seed=seed, n_actions=n_actions)
    w = reference_weights(cfg, obs_dim, n_actions if categorical else 1)
    hs, z = hand_forward(w, obs)
    n, mean = len(actions), p.reduction == "mean"
    per_step = 1 / n if mean else 1.0
    onehot = np.eye(n_actions)[actions] if categorical else actions[:, None]

    def step(grads, scale=1.0, inside=o.epsilon_inside_sqrt, lr=o.learning_rate):
        grads = {k: scale * g for k, g in grads.items()}
        return first_step(grads, lr, o.decay, o.epsilon, inside)

    def change(variant, reference):
        return np.linalg.norm(variant - reference) / np.linalg.norm(reference)

    correct = tf_gradients(tf, w, obs, actions, adv, categorical, mean)
    reference = step(correct)
    logit = hand_backward(w, hs, adv[:, None] * (z - onehot) * per_step)
    prob = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True) if categorical else 1 / (1 + np.exp(-z))
    no_mask = hand_backward(w, hs, adv[:, None] * (prob - onehot) * per_step, mask=False)
    other = "sum" if mean else "mean"
    expected = {
        (
            "1 logit instead of softmax(z) - onehot(a)"
            if categorical
            else "1 logit instead of sigmoid(logit) - y"
        ): change(step(logit), reference),
        f"2 epsilon {'outside' if o.epsilon_inside_sqrt else 'inside'} the sqrt": change(
            step(correct, inside=not o.epsilon_inside_sqrt), reference
        ),
        "2 ... with gradients 1e-6 as large": change(
            step(correct, 1e-6, inside=not o.epsilon_inside_sqrt), step(correct, 1e-6)
        ),
        f"3 reduction '{other}'": change(step(correct, n if mean else 1 / n), reference),
        "4 ReLU mask h < 0 (masks nothing)": change(step(no_mask), reference),
        "7 Keras's float32 learning rate": change(
            step(correct, lr=float(np.float32(o.learning_rate))), reference
        ),
    }
    for label, value in expected.items():
        shown = printed(out, label)
        assert agree_to_3_digits(shown, value), (label, shown, value)
    # float32: pgrl's TF backend in float32 moves the first update by float32 round-off
    assert 1e-8 < printed(out, "5 float32 instead of float64") < 1e-3
    # a naive log(p) is round-off at these logits and a NaN update at saturated ones
    naive = (
        "  log of a softmax without max shift"
        if categorical
        else ("  log of sigmoid(z) = 1 / (1 + exp(-z))")
    )
    assert printed(out, naive) < 1e-10
    assert np.isnan(printed(out, "  ... at logits scaled to max |z| = 1000"))
    assert "At those logits pgrl's backends stay finite" in out
    agree = float(re.search(r"gives TensorFlow's gradients to (\S+)\)", out).group(1))
    assert agree < 1e-12
    head = f"the categorical head, {n_actions} actions:" if categorical else "the Bernoulli head:"
    assert head in out
