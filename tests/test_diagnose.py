"""pgrl diagnose: each mistake, made independently here (plain NumPy by hand, TensorFlow, Keras's
own RMSprop), is named; correct numbers are correct; random ones match nothing; bad input is one
line and exit 2. docs/diagnose.md's worked examples run and print what the page shows."""

import itertools
import os
import pickle
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
from zipedit import zip_field

from pgrl.cli import main as cli_main
from pgrl.diagnose import explain
from pgrl.optim import RMSprop
from pgrl.policies import make_policy
from pgrl.sparse import random_frame_differences

DOCS = Path(__file__).resolve().parents[1] / "docs" / "diagnose.md"
N, OBS_DIM, HIDDEN = 12, 5, 6
ENDS = np.zeros(N, np.int64)
ENDS[[3, 7, 11]] = 1  # three episodes of four steps
GAMMA = 0.9


@pytest.fixture(scope="module")
def tf():
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    return pytest.importorskip("tensorflow")


@pytest.fixture(scope="module")
def case():
    """Weights (one hidden layer, no biases), a batch, and its rewards."""
    rng = np.random.default_rng(7)
    weights = {
        "W1": rng.standard_normal((OBS_DIM, HIDDEN)) / np.sqrt(OBS_DIM),
        "W2": rng.standard_normal((HIDDEN, 1)) / np.sqrt(HIDDEN),
    }
    obs = rng.standard_normal((N, OBS_DIM))
    actions = (rng.random(N) < 0.5).astype(np.int64)
    rewards = np.array([0, 1, 0, -1, 0, 0, 1, 0, -1, 0, 0, 1], np.float64)
    h = obs @ weights["W1"]
    assert 0 < np.sum(h <= 0) < h.size  # dead units: the ReLU mask matters
    return weights, obs, actions, rewards


# ----- the user's side, written here without pgrl -----


def hand_returns(rewards, ends, gamma, reset=False, standardize="episode"):
    """Discounted returns, standardized per episode, per batch or not at all."""
    out, running = np.zeros(len(rewards)), 0.0
    for t in reversed(range(len(rewards))):
        if ends[t] or (reset and rewards[t] != 0):
            running = 0.0
        running = rewards[t] + gamma * running
        out[t] = running
    if standardize == "batch":
        return (out - out.mean()) / out.std()
    if standardize == "episode":
        starts = np.concatenate([[0], np.flatnonzero(ends)[:-1] + 1])
        for lo, hi in zip(starts, np.flatnonzero(ends) + 1, strict=True):
            out[lo:hi] = (out[lo:hi] - out[lo:hi].mean()) / out[lo:hi].std()
    return out


def hand_backward(w, x, h, dz, mean, minus, strict_mask):
    """The rest of a one-hidden-layer port's backward pass from its (N, k) ``dL/dz``, with the
    mistakes switchable: ``mean`` divides by N, ``not minus`` flips the sign, ``strict_mask``
    masks the ReLU where ``h < 0`` (nowhere) instead of ``h <= 0``."""
    if mean:
        dz = dz / len(dz)
    if not minus:
        dz = -dz
    dh = dz @ w["W2"].T
    dh[(h < 0) if strict_mask else (h <= 0)] = 0
    return {"W1": x.T @ dh, "W2": h.T @ dz}


def hand_gradients(w, x, y, adv, logit=False, mean=False, strict_mask=False, minus=True):
    """A gist-style backward pass for one hidden layer, with the mistakes switchable."""
    h = np.maximum(x @ w["W1"], 0)
    z = h @ w["W2"]
    out = z if logit else 1 / (1 + np.exp(-z))
    dz = (out - y[:, None]) * adv[:, None]
    return hand_backward(w, x, h, dz, mean, minus, strict_mask)


def hand_step(w, g, lr=1e-4, decay=0.99, eps=1e-5, inside=False, ascent=False):
    """One RMSprop step from zero state."""
    out = {}
    for k in w:
        v = (1 - decay) * g[k] ** 2
        denom = np.sqrt(v + eps) if inside else np.sqrt(v) + eps
        out[k] = w[k] + lr * g[k] / denom if ascent else w[k] - lr * g[k] / denom
    return out


def tf_gradients(tf, w, x, y, adv, dtype="float64", loss="sum"):
    """tf.GradientTape of the REINFORCE loss, as a TensorFlow port writes it."""
    import keras

    params = {k: tf.Variable(v.astype(dtype)) for k, v in w.items()}
    n_layers = sum(k.startswith("W") for k in w)
    labels = tf.constant(y[:, None], dtype)
    with tf.GradientTape() as tape:
        h = tf.constant(x, dtype)
        for i in range(1, n_layers + 1):
            h = h @ params[f"W{i}"] + (params[f"b{i}"] if f"b{i}" in params else 0)
            if i < n_layers:
                h = tf.nn.relu(h)
        bce = tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=h)[:, 0]
        if loss == "keras_mean":  # Keras's loss object averages over the batch
            # (and computes in float32 unless told otherwise)
            bce_mean = keras.losses.BinaryCrossentropy(from_logits=True, dtype=dtype)
            objective = bce_mean(labels, h, sample_weight=tf.constant(adv, dtype))
        elif loss == "no_minus":  # sum A log pi, handed to a minimizer
            objective = tf.reduce_sum(tf.constant(adv, dtype) * -bce)
        else:
            objective = tf.reduce_sum(tf.constant(adv, dtype) * bce)
    grads = tape.gradient(objective, params)
    return {k: grads[k].numpy() for k in w}


def keras_step(tf, w, g, dtype, lr=1e-4, rho=0.99, eps=1e-5):
    """Weights after one step of Keras's own RMSprop."""
    import keras

    names = list(w)
    variables = [keras.Variable(w[k].astype(dtype)) for k in names]
    opt = keras.optimizers.RMSprop(learning_rate=lr, rho=rho, epsilon=eps)
    opt.apply_gradients(
        [(tf.constant(g[k].astype(dtype)), v) for k, v in zip(names, variables, strict=True)]
    )
    return {k: v.numpy() for k, v in zip(names, variables, strict=True)}


def batch_with(obs, actions, adv=None, rewards=None):
    if adv is not None:
        return {"obs": obs, "actions": actions, "advantages": adv}
    return {"obs": obs, "actions": actions, "rewards": rewards, "episode_ends": ENDS}


# ----- correct numbers are correct -----


def test_tensorflow_gradients_are_correct(case, tf):
    w, obs, actions, rewards = case
    adv = hand_returns(rewards, ENDS, GAMMA)
    g = tf_gradients(tf, w, obs, actions, adv)
    d = explain(w, batch_with(obs, actions, adv), g)
    assert d.status == "correct" and d.exit_code == 0, d
    assert d.gradients.best.error < 1e-12 and d.gradients.blind == []
    assert d.verdict.startswith("correct: your gradients match pgrl's mathematics")
    # from rewards: the returns pgrl computes are the ones computed by hand above
    d = explain(w, batch_with(obs, actions, rewards=rewards), g, gamma=GAMMA)
    assert d.status == "correct", d


def test_biases_deeper_nets_and_mean_reduction_against_tensorflow(tf):
    rng = np.random.default_rng(3)
    policy = make_policy("numpy", obs_dim=4, hidden_sizes=(7, 5), bias=True, seed=3)
    w = {k: v + 0.1 * rng.standard_normal(v.shape) for k, v in policy.get_weights().items()}
    obs, actions, adv = rng.standard_normal((9, 4)), rng.integers(0, 2, 9), rng.standard_normal(9)
    g = tf_gradients(tf, w, obs, actions, adv)
    assert explain(w, batch_with(obs, actions, adv), g).status == "correct"
    g_mean = tf_gradients(tf, w, obs, actions, adv, loss="keras_mean")
    assert explain(w, batch_with(obs, actions, adv), g_mean, reduction="mean").status == "correct"
    d = explain(w, batch_with(obs, actions, adv), g)
    mean = explain(w, batch_with(obs, actions, adv), g_mean)
    assert d.gradients.best.causes == () and mean.gradients.best.causes == ("reduction",)
    # and pgrl's own NumPy backend, on the same numbers
    policy.set_weights(w)
    assert explain(
        w, batch_with(obs, actions, adv), policy.gradients(obs, actions, adv)
    ).status == ("correct")


def test_pong_frame_differences(tf):
    """int8, mostly-zero observations (the sparse first layer) against TensorFlow."""
    rng = np.random.default_rng(0)
    obs = random_frame_differences(rng, 30, 400)
    w = {"W1": rng.standard_normal((400, 8)) / 20, "W2": rng.standard_normal((8, 1)) / 3}
    actions, adv = rng.integers(0, 2, 30), rng.standard_normal(30)
    g = tf_gradients(tf, w, obs.astype(np.float64), actions, adv)
    assert explain(w, batch_with(obs, actions, adv), g).status == "correct"
    g_logit = hand_gradients(w, obs.astype(np.float64), actions, adv, logit=True)
    d = explain(w, batch_with(obs, actions, adv), g_logit)
    assert d.gradients.best.causes == ("logit",)


# ----- each gradient mistake, and every pair of them -----

GRADIENT_MISTAKES = ["logit", "reduction", "relu_mask", "sign", "std_none", "std_batch", "reset"]
COMBOS = [
    c
    for k in (1, 2)
    for c in itertools.combinations(GRADIENT_MISTAKES, k)
    if not {"std_none", "std_batch"} <= set(c)
]


@pytest.mark.parametrize("head", ["bernoulli", "categorical"])
@pytest.mark.parametrize("mistakes", COMBOS, ids="+".join)
def test_gradient_mistakes_and_pairs_are_named(request, head, mistakes):
    """Each mistake and pair, written by hand for either head, is named."""
    categorical = head == "categorical"
    w, obs, actions, rewards = request.getfixturevalue("cat_case" if categorical else "case")
    standardize = "none" if "std_none" in mistakes else "batch" if "std_batch" in mistakes else None
    adv = hand_returns(
        rewards, ENDS, GAMMA, reset="reset" in mistakes, standardize=standardize or "episode"
    )
    g = (hand_categorical_gradients if categorical else hand_gradients)(
        w,
        obs,
        actions,
        adv,
        logit="logit" in mistakes,
        mean="reduction" in mistakes,
        strict_mask="relu_mask" in mistakes,
        minus="sign" not in mistakes,
    )
    d = explain(w, batch_with(obs, actions, rewards=rewards), g, gamma=GAMMA)
    expected = {m.replace("std_", "standardize_") for m in mistakes}
    assert set(d.gradients.best.causes) == expected, d
    assert d.exit_code == 1 and d.status == "known" and not d.gradients.float32
    assert d.gradients.best.error < 1e-12
    if categorical and "logit" in mistakes:
        assert "logit used in place of softmax" in d.verdict


def test_tensorflow_mistakes(case, tf):
    """The mistakes as a TensorFlow port makes them: Keras's mean loss, a missing minus sign."""
    w, obs, actions, rewards = case
    adv = hand_returns(rewards, ENDS, GAMMA)
    batch = batch_with(obs, actions, adv)
    d = explain(w, batch, tf_gradients(tf, w, obs, actions, adv, loss="keras_mean"))
    assert d.gradients.best.causes == ("reduction",) and "mean instead of sum" in d.verdict
    d = explain(w, batch, tf_gradients(tf, w, obs, actions, adv, loss="no_minus"))
    assert d.gradients.best.causes == ("sign",) and "missing minus sign" in d.verdict


def test_float32(case, tf):
    w, obs, actions, rewards = case
    adv = hand_returns(rewards, ENDS, GAMMA)
    g32 = tf_gradients(tf, w, obs, actions, adv, dtype="float32")
    d = explain(w, batch_with(obs, actions, adv), g32)
    assert d.gradients.float32 and d.gradients.best.causes == () and d.exit_code == 1
    assert d.verdict.startswith("known cause: float32 precision (gradients")
    g32 = tf_gradients(tf, w, obs, actions, adv, dtype="float32", loss="keras_mean")
    d = explain(w, batch_with(obs, actions, adv), g32)
    assert d.gradients.float32 and d.gradients.best.causes == ("reduction",)


def test_tiny_network_logit_with_either_sign():
    """The README's network: dW2 = [42, 56, 70] against the correct [3, 4, 5] (advantage +1)."""
    w = {"W1": np.arange(6.0).reshape(2, 3), "W2": np.arange(3.0).reshape(3, 1)}
    x, y = np.array([[0.0, 1.0]]), np.array([0])
    g = {"W1": np.array([[0, 0, 0], [0, 14, 28.0]]), "W2": np.array([[42.0], [56], [70]])}
    d = explain(w, batch_with(x, y, np.ones(1)), g)
    assert d.verdict == "known cause: logit used in place of sigmoid (gradients, rel. error 0)"
    # one step and no hidden unit off: the batch cannot tell mean from sum, nor the ReLU mask
    assert d.gradients.blind == ["mean instead of sum", "ReLU mask h < 0 (masks nothing)"]
    # the gist's sign (ascent direction) is the same numbers with advantage -1
    d = explain(w, batch_with(x, y, -np.ones(1)), g)
    assert set(d.gradients.best.causes) == {"logit", "sign"}
    correct = {"W1": np.array([[0, 0, 0], [0, 1, 2.0]]), "W2": np.array([[3.0], [4], [5]])}
    sig = 1 / (1 + np.exp(-14.0))
    d = explain(w, batch_with(x, y, np.ones(1)), {k: v * sig for k, v in correct.items()})
    assert d.status == "correct"


# ----- the step -----


def test_keras_rmsprop_is_epsilon_inside_the_square_root(case, tf):
    w, obs, actions, rewards = case
    adv = hand_returns(rewards, ENDS, GAMMA)
    batch = batch_with(obs, actions, adv)
    g32 = tf_gradients(tf, w, obs, actions, adv, dtype="float32")
    d = explain(w, batch, g32, keras_step(tf, w, g32, "float32"))
    # Keras's float32 step is pgrl's to the last bit of the saved float32 weights, or (with
    # other TensorFlow builds and CPUs) within float32 precision of it
    assert d.step.best.causes == ("epsilon",) and (d.step.matched or d.step.float32), d
    assert "epsilon inside the square root (step, " in d.verdict
    # float64: Keras also keeps the learning rate in float32
    g64 = tf_gradients(tf, w, obs, actions, adv)
    d = explain(w, batch, g64, keras_step(tf, w, g64, "float64"))
    assert set(d.step.best.causes) == {"epsilon", "lr_float32"} and not d.step.float32, d
    assert d.gradients.status == "correct" and d.exit_code == 1
    # 2**-10 is exact in float32: the epsilon alone, or nothing for a user who meant Keras's form
    after = keras_step(tf, w, g64, "float64", lr=2**-10)
    d = explain(w, batch, g64, after, optimizer=RMSprop(learning_rate=2**-10))
    assert d.step.best.causes == ("epsilon",) and d.exit_code == 1
    keras_form = RMSprop(learning_rate=2**-10, epsilon_inside_sqrt=True)
    assert explain(w, batch, g64, after, optimizer=keras_form).status == "correct"
    # a learning rate other than the one meant matches nothing, and the verdict says which fits
    d = explain(w, batch, g64, after)
    assert d.exit_code == 3 and "a learning rate of 0.000977 instead of 0.0001 fits" in d.verdict


@pytest.mark.parametrize(
    "mistakes",
    [(), ("epsilon",), ("lr_float32",), ("ascent",), ("epsilon", "ascent")],
    ids=lambda m: "+".join(m) or "correct",
)
def test_step_mistakes(case, mistakes):
    w, obs, actions, rewards = case
    adv = hand_returns(rewards, ENDS, GAMMA)
    g = hand_gradients(w, obs, actions, adv)
    lr = float(np.float32(1e-4)) if "lr_float32" in mistakes else 1e-4
    after = hand_step(w, g, lr=lr, inside="epsilon" in mistakes, ascent="ascent" in mistakes)
    d = explain(w, batch_with(obs, actions, adv), g, after)
    assert d.step.best.causes == mistakes and d.step.matched, d
    assert d.exit_code == (1 if mistakes else 0)


def test_the_gists_signs_cancel(case):
    """Gradients -dL/dW added to the weights (Karpathy's gist) are a correct descent step."""
    w, obs, actions, rewards = case
    adv = hand_returns(rewards, ENDS, GAMMA)
    g = hand_gradients(w, obs, actions, adv, minus=False)
    d = explain(w, batch_with(obs, actions, adv), g, hand_step(w, g, ascent=True))
    assert d.exit_code == 0 and d.status == "correct", d
    assert any("Karpathy's gist" in line for line in d.lines())
    # subtracted instead, they climb the loss
    d = explain(w, batch_with(obs, actions, adv), g, hand_step(w, g))
    assert d.exit_code == 1 and d.gradients.best.causes == ("sign",)


# ----- nothing matches -----


def test_random_numbers_match_nothing(case):
    w, obs, actions, rewards = case
    rng = np.random.default_rng(1)
    g = {k: rng.standard_normal(v.shape) for k, v in w.items()}
    d = explain(w, batch_with(obs, actions, rewards=rewards), g, gamma=GAMMA)
    assert d.status == "unknown" and d.exit_code == 3
    assert re.match(r"no known cause: your gradients differ from pgrl's most in W[12] ", d.verdict)
    # a correct gradient with a random step: the step is what differs
    g = hand_gradients(w, obs, actions, hand_returns(rewards, ENDS, GAMMA))
    after = {k: v + 1e-3 * rng.standard_normal(v.shape) for k, v in w.items()}
    d = explain(w, batch_with(obs, actions, rewards=rewards), g, after, gamma=GAMMA)
    assert d.gradients.status == "correct" and d.step.status == "unknown"
    assert d.verdict.startswith("no known cause: your step differs from pgrl's most in W")


def test_one_layer_wrong_names_that_layer(case):
    w, obs, actions, rewards = case
    adv = hand_returns(rewards, ENDS, GAMMA)
    g = hand_gradients(w, obs, actions, adv)
    g["W1"] = g["W1"] * 1.5
    d = explain(w, batch_with(obs, actions, adv), g)
    assert "differ from pgrl's most in W1" in d.verdict and d.exit_code == 3


# ----- the command: exit codes, and one line for every bad input -----


def save(path, **arrays):
    np.savez(path, **arrays)
    return str(path)


@pytest.fixture
def files(tmp_path, case):
    w, obs, actions, rewards = case
    adv = hand_returns(rewards, ENDS, GAMMA)
    g = hand_gradients(w, obs, actions, adv)
    return {
        "weights": save(tmp_path / "W.npz", **w),
        "batch": save(tmp_path / "B.npz", obs=obs, actions=actions, advantages=adv),
        "grads": save(tmp_path / "G.npz", **g),
        "after": save(tmp_path / "A.npz", **hand_step(w, g, inside=True)),
        "logit": save(tmp_path / "logit.npz", **hand_gradients(w, obs, actions, adv, logit=True)),
    }


def argv(files, **replace):
    f = {**files, **replace}
    return ["diagnose", "--weights", f["weights"], "--batch", f["batch"], "--grads", f["grads"]]


def test_cli_exit_codes(files, capsys, tmp_path):
    assert cli_main(argv(files)) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("correct: your gradients match") and "gradient W1" in out[3]
    assert cli_main(argv(files, grads=files["logit"])) == 1
    assert capsys.readouterr().out.startswith("known cause: logit used in place of sigmoid")
    assert cli_main(argv(files) + ["--after", files["after"]]) == 1
    assert "epsilon inside the square root (step" in capsys.readouterr().out.splitlines()[0]
    meant = ["--set", "optimizer.epsilon_inside_sqrt=true", "--optimizer", "rmsprop"]
    assert cli_main(argv(files) + ["--after", files["after"], *meant]) == 0
    capsys.readouterr()
    rng = np.random.default_rng(0)
    shapes = {k: v.shape for k, v in np.load(files["grads"]).items()}
    noise = save(tmp_path / "noise.npz", **{k: rng.standard_normal(s) for k, s in shapes.items()})
    assert cli_main(argv(files, grads=noise)) == 3
    assert capsys.readouterr().out.startswith("no known cause")


def bad_files(tmp_path, case):
    """(name, argv replacement, extra args, expected words in the one-line error)."""
    w, obs, actions, rewards = case
    adv = np.ones(N)
    with open(tmp_path / "pickled.npz", "wb") as f:
        pickle.dump(w, f)
    np.save(tmp_path / "one.npy", w["W1"])
    np.savez(tmp_path / "objects.npz", W1=np.array([w["W1"], "x"], dtype=object), W2=w["W2"])
    return [
        ("no file", {"grads": str(tmp_path / "missing.npz")}, [], "no such file"),
        ("pickle", {"grads": str(tmp_path / "pickled.npz")}, [], "is a Python pickle"),
        ("npy", {"weights": str(tmp_path / "one.npy")}, [], "single .npy array"),
        ("objects", {"grads": str(tmp_path / "objects.npz")}, [], "object arrays"),
        ("directory", {"batch": str(tmp_path)}, [], "not a regular file"),
        ("missing W2", {"grads": save(tmp_path / "g1.npz", W1=w["W1"])}, [], "missing W2"),
        (
            "transposed",
            {"grads": save(tmp_path / "gt.npz", W1=w["W1"].T, W2=w["W2"])},
            [],
            "transposed",
        ),
        (
            "gist W2",
            {"weights": save(tmp_path / "w1d.npz", W1=w["W1"], W2=w["W2"][:, 0])},
            [],
            "2-D",
        ),
        ("no W", {"weights": save(tmp_path / "w0.npz", V1=w["W1"])}, [], "unexpected"),
        (
            "two logits, Bernoulli meant",
            {"weights": save(tmp_path / "w2.npz", W1=w["W1"], W2=np.ones((HIDDEN, 2)))},
            ["--set", "policy.head=bernoulli"],
            "the Bernoulli head has one logit",
        ),
        (
            "one logit, categorical meant",
            {},
            ["--set", "policy.head=categorical"],
            "one logit per action: (6, n), n >= 2",
        ),
        (
            "action 3 of 3",
            {
                "weights": save(tmp_path / "w3.npz", W1=w["W1"], W2=np.ones((HIDDEN, 3))),
                "grads": save(tmp_path / "g3.npz", W1=w["W1"], W2=np.ones((HIDDEN, 3))),
                "batch": save(tmp_path / "b7.npz", obs=obs, actions=actions * 3, advantages=adv),
            },
            [],
            "integers 0 to 2 (one per logit), got [3",
        ),
        (
            "one-hot actions",
            {
                "weights": save(tmp_path / "w3.npz", W1=w["W1"], W2=np.ones((HIDDEN, 3))),
                "batch": save(
                    tmp_path / "b8.npz", obs=obs, actions=np.eye(3)[actions], advantages=adv
                ),
            },
            [],
            "save actions.argmax(axis=1)",
        ),
        ("head", {}, ["--set", "policy.head=poisson"], "policy.head"),
        ("gaussian without log_std", {}, ["--set", "policy.head=gaussian"], "missing log_std"),
        (
            "obs width",
            {"batch": save(tmp_path / "b1.npz", obs=obs[:, :3], actions=actions, advantages=adv)},
            [],
            "columns",
        ),
        (
            "no actions",
            {"batch": save(tmp_path / "b2.npz", obs=obs, advantages=adv)},
            [],
            "missing actions",
        ),
        (
            "actions 2",
            {"batch": save(tmp_path / "b3.npz", obs=obs, actions=actions + 1, advantages=adv)},
            [],
            "0 or 1",
        ),
        (
            "column actions",
            {"batch": save(tmp_path / "b4.npz", obs=obs, actions=actions[:, None], advantages=adv)},
            [],
            "ravel",
        ),
        (
            "both",
            {
                "batch": save(
                    tmp_path / "b5.npz",
                    obs=obs,
                    actions=actions,
                    advantages=adv,
                    rewards=rewards,
                    episode_ends=ENDS,
                )
            },
            [],
            "advantages and rewards",
        ),
        (
            "open episode",
            {
                "batch": save(
                    tmp_path / "b6.npz",
                    obs=obs,
                    actions=actions,
                    rewards=rewards,
                    episode_ends=np.zeros(N),
                )
            },
            [],
            "episode_ends",
        ),
        (
            "NaN",
            {"grads": save(tmp_path / "gn.npz", W1=w["W1"] * np.nan, W2=w["W2"])},
            [],
            "NaN",
        ),
        ("after shape", {}, ["--after", save(tmp_path / "a.npz", W1=w["W1"])], "after"),
        ("setting", {}, ["--set", "policy.hidden_sizes=[3]"], "not used by pgrl diagnose"),
        ("value", {}, ["--set", "optimizer.learning_rate=-1"], "learning_rate"),
    ]


def test_cli_bad_input_is_one_line(files, case, tmp_path, capsys):
    for name, replace, extra, words in bad_files(tmp_path, case):
        assert cli_main(argv(files, **replace) + extra) == 2, name
        captured = capsys.readouterr()
        lines = captured.err.strip().splitlines()
        assert captured.out == "" and len(lines) == 1, (name, captured)
        assert lines[0].startswith("pgrl diagnose: error: ") and words in lines[0], (name, lines)


def one_line(capsys, argv) -> str:
    assert cli_main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert captured.out == "" and len(lines) == 1, captured
    return lines[0]


def test_cli_an_archive_zipfile_cannot_open_is_one_line(files, tmp_path, capsys):
    """A member flagged as encrypted (zipfile's RuntimeError) or compressed by an unknown method
    (NotImplementedError) is a corrupt archive, not a traceback."""
    data = open(files["weights"], "rb").read()
    for name, (local, central, value), reason in (
        ("encrypted", (6, 8, 1), "is encrypted, password required for extraction"),
        ("compressed", (8, 10, 99), "That compression method is not supported"),
    ):
        bad = tmp_path / f"{name}.npz"
        bad.write_bytes(zip_field(data, local, central, value))
        line = one_line(capsys, argv(files, weights=str(bad)))
        assert line.startswith(f"pgrl diagnose: error: weights {bad}: corrupt .npz archive (")
        assert reason in line


def test_cli_a_huge_layer_number_is_refused_at_once(files, case, tmp_path, capsys):
    """A layer number like W99999999999 is refused at once, without a list of the 10^11 layers
    it implies missing."""
    w = case[0]
    for name, weights, words in (
        ("gap", {"W1": w["W1"], "W99999": w["W2"]}, "weights: missing W2, W3, W4, W5, W6 ..."),
        ("eleven digits", {"W1": w["W1"], "W99999999999": w["W2"]}, "unexpected arrays"),
        ("5000 digits", {"W1": w["W1"], "W" + "1" * 5000: w["W2"]}, "unexpected arrays"),
    ):
        line = one_line(capsys, argv(files, weights=save(tmp_path / "w.npz", **weights)))
        assert words in line and len(line) < 400, (name, line[:300])


def test_cli_thousands_of_unexpected_arrays_are_counted_not_listed(files, case, tmp_path, capsys):
    w = case[0]
    extra = {f"x{i}": np.zeros(1) for i in range(3000)}
    line = one_line(capsys, argv(files, grads=save(tmp_path / "g.npz", **w, **extra)))
    assert line == (
        "pgrl diagnose: error: grads: unexpected x0, x1, x10, x100, x1000, x1001, x1002, x1003 "
        "and 2,992 more (weights hold W1, W2)"
    )


# ----- the categorical head: W_last with n >= 2 columns, actions 0 .. n-1 -----

N_ACTIONS = 3


@pytest.fixture(scope="module")
def cat_case():
    """Weights with a 3-logit last layer, a batch of actions 0..2, and its rewards."""
    rng = np.random.default_rng(11)
    weights = {
        "W1": rng.standard_normal((OBS_DIM, HIDDEN)) / np.sqrt(OBS_DIM),
        "W2": rng.standard_normal((HIDDEN, N_ACTIONS)) / np.sqrt(HIDDEN) * 2,
    }
    obs = rng.standard_normal((N, OBS_DIM))
    actions = rng.integers(0, N_ACTIONS, N)
    rewards = np.array([0, 1, 0, -1, 0, 0, 1, 0, -1, 0, 0, 1], np.float64)
    h = obs @ weights["W1"]
    assert 0 < np.sum(h <= 0) < h.size and len(set(actions)) == N_ACTIONS
    return weights, obs, actions, rewards


def hand_categorical_gradients(
    w, x, a, adv, logit=False, mean=False, strict_mask=False, minus=True
):
    """A hand-written softmax backward pass (one hidden layer), with the mistakes switchable."""
    h = np.maximum(x @ w["W1"], 0)
    z = h @ w["W2"]
    if logit:
        out = z.copy()
    else:
        e = np.exp(z - z.max(axis=1, keepdims=True))
        out = e / e.sum(axis=1, keepdims=True)
    onehot = np.zeros_like(z)
    onehot[np.arange(len(a)), a] = 1
    dz = (out - onehot) * adv[:, None]
    return hand_backward(w, x, h, dz, mean, minus, strict_mask)


def tf_categorical_gradients(tf, w, x, a, adv, dtype="float64", loss="sum"):
    """tf.GradientTape over sparse_softmax_cross_entropy_with_logits, as a TF port writes it."""
    import keras

    params = {k: tf.Variable(v.astype(dtype)) for k, v in w.items()}
    n_layers = sum(k.startswith("W") for k in w)
    labels = tf.constant(a, tf.int64)
    weights = tf.constant(adv, dtype)
    with tf.GradientTape() as tape:
        z = tf.constant(x, dtype)
        for i in range(1, n_layers + 1):
            z = z @ params[f"W{i}"] + (params[f"b{i}"] if f"b{i}" in params else 0)
            if i < n_layers:
                z = tf.nn.relu(z)
        ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=z)
        if loss == "keras_mean":  # Keras's loss object averages over the batch
            cce = keras.losses.SparseCategoricalCrossentropy(from_logits=True, dtype=dtype)
            objective = cce(labels, z, sample_weight=weights)
        elif loss == "no_minus":  # sum A log pi, handed to a minimizer
            objective = tf.reduce_sum(weights * -ce)
        else:
            objective = tf.reduce_sum(weights * ce)
    grads = tape.gradient(objective, params)
    return {k: grads[k].numpy() for k in w}


def test_categorical_correct_numbers_are_correct(cat_case, tf):
    w, obs, actions, rewards = cat_case
    adv = hand_returns(rewards, ENDS, GAMMA)
    for g in (
        tf_categorical_gradients(tf, w, obs, actions, adv),
        hand_categorical_gradients(w, obs, actions, adv),
    ):
        d = explain(w, batch_with(obs, actions, adv), g)
        assert d.status == "correct" and d.exit_code == 0 and d.head == "categorical", d
        assert d.gradients.best.error < 1e-12 and d.gradients.blind == []
        d = explain(w, batch_with(obs, actions, rewards=rewards), g, gamma=GAMMA)
        assert d.status == "correct", d
    lines = d.lines()
    assert "head: categorical, 3 actions" in "\n".join(lines)
    assert "L = sum_t A_t * CE(a_t, z_t)" in lines[-2]
    # actions saved as floats (a Keras script's labels) read as the same indices
    d = explain(w, batch_with(obs, actions.astype(np.float32), adv), g)
    assert d.status == "correct"


def test_categorical_policies_biases_deeper_nets_and_two_actions(tf):
    """pgrl's own categorical policies, with biases and two hidden layers, against TF; and a
    2-column last layer (CartPole's softmax head) is read as categorical, not Bernoulli."""
    rng = np.random.default_rng(5)
    for n_actions in (2, 4):
        w = make_policy(
            "numpy",
            obs_dim=4,
            hidden_sizes=(7, 5),
            bias=True,
            head="categorical",
            n_actions=n_actions,
            seed=1,
        ).get_weights()
        w = {k: v + 0.1 * rng.standard_normal(v.shape) for k, v in w.items()}
        obs, adv = rng.standard_normal((9, 4)), rng.standard_normal(9)
        actions = rng.integers(0, n_actions, 9)
        batch = batch_with(obs, actions, adv)
        g = tf_categorical_gradients(tf, w, obs, actions, adv)
        assert explain(w, batch, g).status == "correct"
        for backend in ("numpy", "tensorflow"):
            policy = make_policy(
                backend,
                obs_dim=4,
                hidden_sizes=(7, 5),
                bias=True,
                head="categorical",
                n_actions=n_actions,
            )
            policy.set_weights(w)
            d = explain(w, batch, policy.gradients(obs, actions, adv))
            assert d.status == "correct" and d.head == "categorical", (backend, d)
        g_mean = tf_categorical_gradients(tf, w, obs, actions, adv, loss="keras_mean")
        assert explain(w, batch, g_mean).gradients.best.causes == ("reduction",)
        assert explain(w, batch, g_mean, reduction="mean").status == "correct"


def test_categorical_tensorflow_mistakes_and_float32(cat_case, tf):
    """Keras's mean loss, a missing minus sign and float32, as a TensorFlow port makes them."""
    w, obs, actions, rewards = cat_case
    adv = hand_returns(rewards, ENDS, GAMMA)
    batch = batch_with(obs, actions, adv)
    g = tf_categorical_gradients(tf, w, obs, actions, adv, loss="keras_mean")
    d = explain(w, batch, g)
    assert d.gradients.best.causes == ("reduction",) and "mean instead of sum" in d.verdict
    d = explain(w, batch, tf_categorical_gradients(tf, w, obs, actions, adv, loss="no_minus"))
    assert d.gradients.best.causes == ("sign",) and "missing minus sign" in d.verdict
    g32 = tf_categorical_gradients(tf, w, obs, actions, adv, dtype="float32")
    d = explain(w, batch, g32)
    assert d.gradients.float32 and d.gradients.best.causes == () and d.exit_code == 1
    assert d.verdict.startswith("known cause: float32 precision (gradients")
    g32 = tf_categorical_gradients(tf, w, obs, actions, adv, dtype="float32", loss="keras_mean")
    d = explain(w, batch, g32)
    assert d.gradients.float32 and d.gradients.best.causes == ("reduction",)


def test_categorical_keras_rmsprop_step(cat_case, tf):
    """Keras's own RMSprop after categorical gradients: epsilon inside the square root, and in
    float64 its float32 learning rate; a hand-made step with each optimizer mistake."""
    w, obs, actions, rewards = cat_case
    adv = hand_returns(rewards, ENDS, GAMMA)
    batch = batch_with(obs, actions, adv)
    g64 = tf_categorical_gradients(tf, w, obs, actions, adv)
    d = explain(w, batch, g64, keras_step(tf, w, g64, "float64"))
    assert set(d.step.best.causes) == {"epsilon", "lr_float32"} and not d.step.float32, d
    assert d.gradients.status == "correct" and d.exit_code == 1
    g32 = tf_categorical_gradients(tf, w, obs, actions, adv, dtype="float32")
    d = explain(w, batch, g32, keras_step(tf, w, g32, "float32"))
    assert d.step.best.causes == ("epsilon",) and d.step.matched, d
    for mistakes in [(), ("epsilon",), ("lr_float32",), ("ascent",), ("epsilon", "lr_float32")]:
        lr = float(np.float32(1e-4)) if "lr_float32" in mistakes else 1e-4
        after = hand_step(w, g64, lr=lr, inside="epsilon" in mistakes, ascent="ascent" in mistakes)
        d = explain(w, batch, g64, after)
        assert d.step.best.causes == mistakes and d.exit_code == (1 if mistakes else 0), d


def test_categorical_random_numbers_match_nothing(cat_case):
    w, obs, actions, rewards = cat_case
    rng = np.random.default_rng(2)
    g = {k: rng.standard_normal(v.shape) for k, v in w.items()}
    d = explain(w, batch_with(obs, actions, rewards=rewards), g, gamma=GAMMA)
    assert d.status == "unknown" and d.exit_code == 3, d
    # one logit's column of W2 off by half: no known cause, and the layer is named
    g = hand_categorical_gradients(w, obs, actions, hand_returns(rewards, ENDS, GAMMA))
    g["W2"] = g["W2"] * np.array([1.0, 1.0, 0.5])
    d = explain(w, batch_with(obs, actions, rewards=rewards), g, gamma=GAMMA)
    assert d.exit_code == 3 and "differ from pgrl's most in W2" in d.verdict


def test_categorical_head_named_explicitly(cat_case, tmp_path, capsys):
    """``--set policy.head=categorical`` agrees with the detection; the command reports it."""
    w, obs, actions, rewards = cat_case
    adv = hand_returns(rewards, ENDS, GAMMA)
    f = {
        "weights": save(tmp_path / "W.npz", **w),
        "batch": save(tmp_path / "B.npz", obs=obs, actions=actions, advantages=adv),
        "grads": save(
            tmp_path / "G.npz", **hand_categorical_gradients(w, obs, actions, adv, logit=True)
        ),
    }
    for extra in ([], ["--set", "policy.head=categorical"]):
        assert cli_main(argv(f) + extra) == 1
        out = capsys.readouterr().out
        assert out.startswith("known cause: logit used in place of softmax (gradients")
        assert "head: categorical, 3 actions" in out and "CE(a_t, z_t)" in out


# ----- docs/diagnose.md: its examples run and print what the page shows -----


def doc_blocks():
    return re.findall(r"```(python|console)\n(.*?)```", DOCS.read_text(), flags=re.S)


def same_output(shown: str, printed: str) -> bool:
    """Equal text; numbers below 1e-6 (round-off, which varies with the BLAS) equal any other."""
    a, b = shown.split(), printed.split()
    if len(a) != len(b):
        return False
    for x, y in zip(a, b, strict=True):
        if x != y:
            try:
                fx, fy = float(x.strip("(),;")), float(y.strip("(),;"))
            except ValueError:
                return False
            if max(abs(fx), abs(fy)) >= 1e-6:
                return False
    return True


def test_docs_examples(tmp_path, monkeypatch, capsys, tf):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    commands, status = 0, None
    for kind, block in doc_blocks():
        if kind == "python":
            exec(compile(block, str(DOCS), "exec"), namespace)
            capsys.readouterr()
            continue
        for command, shown in re.findall(r"^\$ (.*)\n((?:(?!\$ ).*\n)*)", block, flags=re.M):
            if command == "echo $?":
                assert shown.strip() == str(status)
                continue
            args = shlex.split(command)
            assert args[0] == "pgrl"
            status = cli_main(args[1:])
            printed = capsys.readouterr().out
            assert same_output(shown, printed), f"{command}\nshown:\n{shown}\nprinted:\n{printed}"
            commands += 1
    assert commands >= 2
    text = DOCS.read_text()
    assert "logit used in place of sigmoid" in text and "epsilon inside the square root" in text
    assert "logit used in place of softmax" in text and "head: categorical, 3 actions" in text


def test_readme_example_prints_what_it_says(capsys):
    readme = (DOCS.parents[1] / "README.md").read_text()
    (block,) = [
        b for b in re.findall(r"```python\n(.*?)```", readme, flags=re.S) if "pgrl.diagnose" in b
    ]
    exec(compile(block, "README.md", "exec"), {})
    expected = block.strip().splitlines()[-1].removeprefix("# ")
    assert capsys.readouterr().out.strip() == expected


# ----- PPO: one minibatch of the clipped surrogate, with old log-probs -----

CLIP = 0.2


@pytest.fixture(scope="module")
def ppo_case():
    """Weights whose logits reach z = 36 (where float64's 1 - sigmoid(z) rounds), a batch of
    both actions, advantages of both signs, and old log-probs with many ratios outside the clip."""
    rng = np.random.default_rng(21)
    n = 64
    weights = {
        "W1": rng.standard_normal((OBS_DIM, HIDDEN)) / np.sqrt(OBS_DIM),
        "W2": rng.standard_normal((HIDDEN, 1)) / np.sqrt(HIDDEN),
    }
    obs = rng.standard_normal((n, OBS_DIM))
    z = np.maximum(obs @ weights["W1"], 0) @ weights["W2"]
    weights["W2"] *= 36 / np.max(z)
    actions = (rng.random(n) < 0.5).astype(np.int64)
    adv = rng.standard_normal(n)
    z = (np.maximum(obs @ weights["W1"], 0) @ weights["W2"])[:, 0]
    log_pi = -np.logaddexp(0, np.where(actions == 1, -z, z))
    old = np.minimum(log_pi + rng.normal(0, 0.3, n), 0.0)
    rho = np.exp(log_pi - old)
    assert 0.3 < np.mean(np.abs(rho - 1) > CLIP) < 0.8
    assert np.sum((actions == 0) & (z > 20)) >= 2  # action 0 at p ~ 1: 1 - p rounds there
    return weights, obs, actions, adv, old


def hand_ppo_gradients(
    w, x, y, adv, old, eps, ratio=False, max_first=False, mean=False, relu_mask=False, minus=True
):
    """A NumPy PPO port's backward pass for one hidden layer, written out, with the mistakes
    switchable: ``ratio``: rho = pi / pi_old of probabilities (sigmoid written as a NumPy port
    writes it); ``max_first``: the min taken before the sign."""
    h = np.maximum(x @ w["W1"], 0)
    z = (h @ w["W2"])[:, 0]
    p = 1 / (1 + np.exp(-z))
    if ratio:
        pi = np.where(y == 1, p, 1 - p)
        rho = pi / np.exp(old)
        drho = np.where(y == 1, p * (1 - p), -p * (1 - p)) / np.exp(old)  # dpi/dz / pi_old
    else:
        log_pi = -np.logaddexp(0, np.where(y == 1, -z, z))
        rho = np.exp(log_pi - old)
        drho = rho * np.where(y == 1, 1 / (1 + np.exp(z)), -p)  # rho * dlog pi / dz
    surr1, surr2 = rho * adv, np.clip(rho, 1 - eps, 1 + eps) * adv
    # L = -min(surr1, surr2), or max(-surr1, -surr2) ... taken as min(-surr1, -surr2)
    through_surr1 = surr1 >= surr2 if max_first else surr1 <= surr2
    dz = np.where(through_surr1, -adv * drho, 0.0)[:, None]
    return hand_backward(w, x, h, dz, mean, minus, relu_mask)


def tf_ppo_gradients(tf, w, x, y, adv, old, eps, min_first=False, dtype="float64"):
    """tf.GradientTape of PPO's surrogate as a TensorFlow port writes it."""
    params = {k: tf.Variable(v.astype(dtype)) for k, v in w.items()}
    with tf.GradientTape() as tape:
        h = tf.nn.relu(tf.constant(x, dtype) @ params["W1"])
        z = (h @ params["W2"])[:, 0]
        log_pi = -tf.nn.sigmoid_cross_entropy_with_logits(labels=tf.constant(y, dtype), logits=z)
        rho = tf.exp(log_pi - tf.constant(old, dtype))
        a = tf.constant(adv, dtype)
        surr1, surr2 = rho * a, tf.clip_by_value(rho, 1 - eps, 1 + eps) * a
        if min_first:
            loss = tf.reduce_sum(tf.minimum(-surr1, -surr2))
        else:
            loss = -tf.reduce_sum(tf.minimum(surr1, surr2))
    grads = tape.gradient(loss, params)
    return {k: grads[k].numpy() for k in w}


def ppo_batch(obs, actions, adv, old, **more):
    return {"obs": obs, "actions": actions, "advantages": adv, "old_log_probs": old, **more}


def test_ppo_correct_gradients_are_correct(ppo_case, tf):
    w, obs, actions, adv, old = ppo_case
    batch = ppo_batch(obs, actions, adv, old)
    for g in (
        tf_ppo_gradients(tf, w, obs, actions, adv, old, CLIP),
        hand_ppo_gradients(w, obs, actions, adv, old, CLIP),
    ):
        d = explain(w, batch, g)
        assert d.status == "correct" and d.gradients.best.error < 1e-12, d
    ppo_line = "PPO: one minibatch of the clipped surrogate, rho_t = exp(logp_t - logp_old_t), "
    assert ppo_line + "clip 0.2 (ppo.clip's default); 41% of the ratios outside" in str(d)
    assert "L = -sum_t min(rho_t A_t, clip(rho_t, 1 - eps, 1 + eps) A_t)" in str(d)
    # pgrl's own NumPy policy, on the same numbers
    policy = make_policy("numpy", obs_dim=OBS_DIM, hidden_sizes=(HIDDEN,))
    policy.set_weights(w)
    assert explain(w, batch, policy.gradients(obs, actions, adv, old, CLIP)).status == "correct"
    # REINFORCE's gradient is not PPO's where ratios are clipped or away from 1
    d = explain(w, batch, hand_gradients(w, obs, actions, adv))
    assert d.status == "unknown", d
    # another clip is another surrogate: told, pgrl says so; not told, nothing known fits
    g = hand_ppo_gradients(w, obs, actions, adv, old, 0.1)
    assert explain(w, batch, g).status == "unknown"
    assert explain(w, batch, g, clip=0.1).status == "correct"
    assert (
        explain(w, ppo_batch(obs, actions, adv, old, clip=np.float64(0.1)), g).status == "correct"
    )


PPO_MISTAKES = [
    ("max",),
    ("ratio",),
    ("max", "ratio"),
    ("max", "reduction"),
    ("max", "sign"),
    ("ratio", "relu_mask"),
    ("ratio", "reduction"),
]


@pytest.mark.parametrize("mistakes", PPO_MISTAKES, ids="+".join)
def test_ppo_mistakes_are_named(ppo_case, mistakes):
    w, obs, actions, adv, old = ppo_case
    g = hand_ppo_gradients(
        w,
        obs,
        actions,
        adv,
        old,
        CLIP,
        ratio="ratio" in mistakes,
        max_first="max" in mistakes,
        mean="reduction" in mistakes,
        relu_mask="relu_mask" in mistakes,
        minus="sign" not in mistakes,
    )
    d = explain(w, ppo_batch(obs, actions, adv, old), g)
    assert set(d.gradients.best.causes) == set(mistakes), d
    assert d.exit_code == 1 and d.gradients.best.error < 1e-12 and not d.gradients.float32
    if "ratio" in mistakes:
        assert "ratio pi / pi_old of probabilities, not exp(logp - logp_old)" in d.verdict
    if "max" in mistakes:
        assert "min taken before the sign: min(-rho A, -clip(rho) A)" in d.verdict


def test_ppo_min_before_the_sign_in_tensorflow(ppo_case, tf):
    w, obs, actions, adv, old = ppo_case
    g = tf_ppo_gradients(tf, w, obs, actions, adv, old, CLIP, min_first=True)
    d = explain(w, ppo_batch(obs, actions, adv, old), g)
    assert d.gradients.best.causes == ("max",) and d.exit_code == 1, d


def test_ppo_ratio_of_probabilities_only_shows_where_they_round(ppo_case):
    """At moderate logits pi / pi_old is exp(logp - logp_old) to round-off: correct, and the
    batch cannot rule the mistake out."""
    w, obs, actions, adv, old = ppo_case
    w = {"W1": w["W1"], "W2": w["W2"] / 10}
    z = (np.maximum(obs @ w["W1"], 0) @ w["W2"])[:, 0]
    old = np.minimum(-np.logaddexp(0, np.where(actions == 1, -z, z)) + 0.3, 0.0)
    g = hand_ppo_gradients(w, obs, actions, adv, old, CLIP, ratio=True)
    d = explain(w, ppo_batch(obs, actions, adv, old), g)
    assert d.status == "correct", d
    assert "ratio pi / pi_old of probabilities, not exp(logp - logp_old)" in d.gradients.blind


def test_ppo_ratio_of_probabilities_in_float32(ppo_case):
    """A float32 port: 1 - sigmoid(z) loses digits as z grows (about 1e-3 at z ~ 10); the ratio
    of its probabilities is named, with float32 precision."""
    w, obs, actions, adv, old = ppo_case
    w32 = {"W1": w["W1"].astype(np.float32), "W2": (w["W2"] / 3).astype(np.float32)}
    x32 = obs.astype(np.float32)
    z = (np.maximum(x32 @ w32["W1"], 0) @ w32["W2"])[:, 0].astype(np.float64)
    old = np.minimum(-np.logaddexp(0, np.where(actions == 1, -z, z)) + 0.2, 0.0)
    g = hand_ppo_gradients(
        w32, x32, actions, adv.astype(np.float32), old.astype(np.float32), CLIP, ratio=True
    )
    assert all(v.dtype == np.float32 for v in g.values())
    d = explain(w32, ppo_batch(x32, actions, adv.astype(np.float32), old.astype(np.float32)), g)
    assert d.gradients.best.causes == ("ratio",) and d.gradients.float32, d


def test_ppo_cli_and_bad_input_is_one_line(ppo_case, tmp_path, capsys):
    w, obs, actions, adv, old = ppo_case
    n = len(actions)
    ends = np.zeros(n, np.int64)
    ends[-1] = 1
    f = {
        "weights": save(tmp_path / "W.npz", **w),
        "batch": save(tmp_path / "B.npz", **ppo_batch(obs, actions, adv, old)),
        "grads": save(tmp_path / "G.npz", **hand_ppo_gradients(w, obs, actions, adv, old, CLIP)),
    }
    assert cli_main(argv(f)) == 0
    assert "PPO: one minibatch of the clipped surrogate" in capsys.readouterr().out
    assert cli_main(argv(f) + ["--set", "ppo.clip=0.2"]) == 0
    assert cli_main(argv(f) + ["--set", "ppo.clip=0.1"]) == 3  # another surrogate: none fits
    capsys.readouterr()

    def batch(name, **arrays):
        return {"batch": save(tmp_path / f"{name}.npz", **arrays)}

    plain = {"obs": obs, "actions": actions, "advantages": adv}
    for name, replace, extra, words in [
        (
            "shape",
            batch("b1", **ppo_batch(obs, actions, adv, old[:-1])),
            [],
            f"batch old_log_probs must have shape ({n},) like obs, got ({n - 1},)",
        ),
        (
            "probabilities",
            batch("b2", **ppo_batch(obs, actions, adv, np.exp(old))),
            [],
            "must be log-probabilities, <= 0, got [",
        ),
        ("NaN", batch("b3", **ppo_batch(obs, actions, adv, old * np.nan)), [], "NaN"),
        ("clip alone", batch("b4", **plain, clip=0.2), [], "batch: clip without old_log_probs"),
        ("--set clip alone", batch("b5", **plain), ["--set", "ppo.clip=0.2"], "without old_log"),
        (
            "rewards",
            batch(
                "b6", obs=obs, actions=actions, rewards=adv, episode_ends=ends, old_log_probs=old
            ),
            [],
            "old_log_probs need advantages",
        ),
        (
            "clip 1.5",
            batch("b7", **ppo_batch(obs, actions, adv, old, clip=1.5)),
            [],
            "batch clip must be one number in (0, 1), PPO's eps, got 1.5",
        ),
        (
            "two clips",
            batch("b8", **ppo_batch(obs, actions, adv, old, clip=np.array([0.1, 0.2]))),
            [],
            "batch clip must be one number in (0, 1)",
        ),
        (
            "clips differ",
            batch("b9", **ppo_batch(obs, actions, adv, old, clip=0.1)),
            ["--set", "ppo.clip=0.2"],
            "batch clip 0.1 and ppo.clip 0.2 differ",
        ),
        ("--set clip 1.5", {}, ["--set", "ppo.clip=1.5"], "ppo.clip"),
    ]:
        line = one_line(capsys, argv(f, **replace) + extra)
        assert line.startswith("pgrl diagnose: error: ") and words in line, (name, line)
    assert "probabilities? save np.log(p)" in one_line(
        capsys, argv(f, **batch("b2", **ppo_batch(obs, actions, adv, np.exp(old))))
    )


# ----- the gaussian head: its own porting mistakes, made here by hand -----

D, LOW, HIGH = 3, -1.0, 1.0


@pytest.fixture(scope="module")
def gauss_case():
    """Weights (one hidden layer, biases, log_std off 0 and unequal), a batch of 16 sampled
    actions of which some lie beyond [-1, 1], and old log-probs a step away."""
    rng = np.random.default_rng(11)
    weights = {
        "W1": rng.standard_normal((OBS_DIM, HIDDEN)) / np.sqrt(OBS_DIM),
        "b1": rng.normal(0.0, 0.1, HIDDEN),
        "W2": rng.standard_normal((HIDDEN, D)) / np.sqrt(HIDDEN),
        "b2": rng.normal(0.0, 0.1, D),
        "log_std": np.array([-0.7, -0.2, 0.4]),
    }
    obs = rng.standard_normal((16, OBS_DIM))
    mu = hand_gauss_forward(weights, obs)[2]
    actions = mu + np.exp(weights["log_std"]) * rng.standard_normal((16, D))
    assert 0 < np.mean((actions < LOW) | (actions > HIGH)) < 0.5
    adv = rng.standard_normal(16)
    return weights, obs, actions, adv


def hand_gauss_forward(w, x):
    a1 = x @ w["W1"] + w["b1"]
    h = np.maximum(a1, 0)
    return a1, h, h @ w["W2"] + w["b2"]


def hand_gauss_log_prob(w, x, a, mistake=None):
    """A port's (N,) log pi and (N, d) d log pi / d mu, d log pi / d(its log_std parameter),
    with one mistake or a tuple of them: ``std`` differentiates w.r.t. sigma, ``log_sigma``
    drops the -log sigma term, ``dim_mean`` averages over the dimensions, ``clipped`` reads the
    action the env got."""
    mistakes = (mistake,) if isinstance(mistake, str) else mistake or ()
    _, h, mu = hand_gauss_forward(w, x)
    log_std = w["log_std"]
    sigma = np.exp(log_std)
    if "clipped" in mistakes:
        a = np.clip(a, LOW, HIGH)
    u = (a - mu) / sigma
    terms = -0.5 * u**2 - 0.5 * np.log(2 * np.pi) - (0 if "log_sigma" in mistakes else log_std)
    d_mu = u / sigma
    d_log_std = u**2 - (0 if "log_sigma" in mistakes else 1)
    if "std" in mistakes:
        d_log_std = d_log_std / sigma  # d/dsigma = d/dlog sigma * dlog sigma/dsigma
    reduce = np.mean if "dim_mean" in mistakes else np.sum
    scale = 1 / a.shape[1] if "dim_mean" in mistakes else 1.0
    return reduce(terms, axis=1), d_mu * scale, d_log_std * scale


def hand_gauss_gradients(w, x, a, adv, mistake=None, old=None, clip=CLIP):
    """dL/dW of REINFORCE (or, with ``old``, PPO's surrogate) through a port's log pi."""
    a1, h, _ = hand_gauss_forward(w, x)
    logp, d_mu, d_log_std = hand_gauss_log_prob(w, x, a, mistake)
    dl = -adv
    if old is not None:
        rho = np.exp(logp - old)
        dl = np.where(rho * adv <= np.clip(rho, 1 - clip, 1 + clip) * adv, -rho * adv, 0.0)
    dmu = dl[:, None] * d_mu
    dh = dmu @ w["W2"].T
    dh[a1 <= 0] = 0
    return {
        "W1": x.T @ dh,
        "b1": dh.sum(axis=0),
        "W2": h.T @ dmu,
        "b2": dmu.sum(axis=0),
        "log_std": (dl[:, None] * d_log_std).sum(axis=0),
    }


def gauss_batch(obs, actions, adv, bounds=True, **more):
    extra = {"low": LOW, "high": HIGH} if bounds else {}
    return {"obs": obs, "actions": actions, "advantages": adv, **extra, **more}


GAUSSIAN_LABELS = {
    "std": "dL/dsigma in place of dL/dlog_std",
    "log_sigma": "log pi without its -log sigma term",
    "dim_mean": "log pi averaged over the action dimensions",
    "clipped": "log pi of the clipped action",
}


def test_gaussian_correct_numbers_are_correct(gauss_case, tf):
    w, obs, a, adv = gauss_case
    params = {k: tf.Variable(v) for k, v in w.items()}
    with tf.GradientTape() as tape:
        h = tf.nn.relu(obs @ params["W1"] + params["b1"])
        mu = h @ params["W2"] + params["b2"]
        normal = -0.5 * ((a - mu) / tf.exp(params["log_std"])) ** 2 - params["log_std"]
        loss = -tf.reduce_sum(adv * tf.reduce_sum(normal - 0.5 * np.log(2 * np.pi), axis=1))
    grads = {
        k: g.numpy()
        for k, g in zip(params, tape.gradient(loss, list(params.values())), strict=True)
    }
    for g in (grads, hand_gauss_gradients(w, obs, a, adv)):
        result = explain(w, gauss_batch(obs, a, adv), g)
        assert result.exit_code == 0, str(result)
    assert "head: gaussian, d = 3" in str(result)
    assert re.search(r"bounds: low -1, high 1; \d+ of 16 actions beyond them", str(result))


@pytest.mark.parametrize("mistake", list(GAUSSIAN_LABELS))
def test_gaussian_mistakes_are_named(gauss_case, mistake):
    w, obs, a, adv = gauss_case
    grads = hand_gauss_gradients(w, obs, a, adv, mistake)
    result = explain(w, gauss_batch(obs, a, adv), grads)
    assert result.exit_code == 1, str(result)
    assert result.gradients.named == [
        next(v for v in result.gradients.labels.values() if GAUSSIAN_LABELS[mistake] in v)
    ], str(result)


@pytest.mark.parametrize("mistake", [None, *GAUSSIAN_LABELS])
def test_gaussian_ppo_mistakes_are_named(gauss_case, mistake):
    """PPO's surrogate with the port's old log-probs (its own log pi, a step away)."""
    w, obs, a, adv = gauss_case
    noise = np.random.default_rng(3).normal(0.0, 1.5 * CLIP, len(adv))
    old = hand_gauss_log_prob(w, obs, a, mistake)[0] - noise
    grads = hand_gauss_gradients(w, obs, a, adv, mistake, old)
    result = explain(w, gauss_batch(obs, a, adv, old_log_probs=old), grads)
    if mistake is None:
        assert result.exit_code == 0, str(result)
        return
    assert result.exit_code == 1, str(result)
    assert len(result.gradients.named) == 1, str(result)
    assert GAUSSIAN_LABELS[mistake] in result.gradients.named[0], str(result)


def test_gaussian_mistake_pairs_and_the_classic_ones(gauss_case):
    w, obs, a, adv = gauss_case
    for pair in itertools.combinations(GAUSSIAN_LABELS, 2):
        grads = hand_gauss_gradients(w, obs, a, adv, pair)
        result = explain(w, gauss_batch(obs, a, adv), grads)
        assert result.exit_code == 1 and len(result.gradients.named) == 2, str(result)
        for m in pair:
            assert any(GAUSSIAN_LABELS[m] in n for n in result.gradients.named), (pair, result)
    mean = {k: v / len(adv) for k, v in hand_gauss_gradients(w, obs, a, adv, "std").items()}
    sign = {k: -v for k, v in hand_gauss_gradients(w, obs, a, adv, "clipped").items()}
    for grads, classic in ((mean, "mean instead of sum"), (sign, "missing minus sign")):
        result = explain(w, gauss_batch(obs, a, adv), grads)
        assert result.exit_code == 1 and len(result.gradients.named) == 2, str(result)
        assert any(n.startswith(classic) for n in result.gradients.named), str(result)


def test_gaussian_without_bounds_the_clipped_action_is_unknown(gauss_case):
    w, obs, a, adv = gauss_case
    grads = hand_gauss_gradients(w, obs, a, adv, "clipped")
    result = explain(w, gauss_batch(obs, a, adv, bounds=False), grads)
    assert result.exit_code == 3, str(result)
    assert "log pi of the clipped action is not tested" in str(result)
    # inside the bounds every action is its clipped self: the mistake cannot show
    inside = np.clip(a, LOW, HIGH)
    result = explain(w, gauss_batch(obs, inside, adv), hand_gauss_gradients(w, obs, inside, adv))
    assert result.exit_code == 0
    assert "cannot rule out log pi of the clipped action" in str(result)


def test_gaussian_d1_per_sigma_is_blind_at_sigma_1(gauss_case):
    """One dimension: no mean over dimensions to make; at sigma = 1, dL/dsigma = dL/dlog_std."""
    w, obs, a, adv = gauss_case
    w1 = {**w, "W2": w["W2"][:, :1], "b2": w["b2"][:1], "log_std": np.zeros(1)}
    grads = hand_gauss_gradients(w1, obs, a[:, :1], adv, "std")
    result = explain(w1, gauss_batch(obs, a[:, :1], adv), grads)
    assert result.exit_code == 0
    assert "averaged over the action dimensions" not in str(result)
    assert "cannot rule out dL/dsigma in place of dL/dlog_std" in str(result)


def test_gaussian_cli_and_bad_input_is_one_line(gauss_case, tmp_path, capsys):
    w, obs, a, adv = gauss_case
    paths = {
        "weights": save(tmp_path / "w.npz", **w),
        "batch": save(tmp_path / "b.npz", **gauss_batch(obs, a, adv)),
        "grads": save(tmp_path / "g.npz", **hand_gauss_gradients(w, obs, a, adv, "dim_mean")),
    }

    def run(**replace):
        files = {**paths, **replace}
        return cli_main(["diagnose", *(f"--{k}={v}" for k, v in files.items())])

    assert run() == 1
    assert "log pi averaged over the action dimensions" in capsys.readouterr().out
    no_log_std = {k: v for k, v in w.items() if k != "log_std"}
    cases = [
        (
            {"batch": save(tmp_path / "b1.npz", obs=obs, actions=a, advantages=adv, low=LOW)},
            "low without high",
        ),
        (
            {"batch": save(tmp_path / "b2.npz", **gauss_batch(obs, a[:, 0], adv))},
            "batch actions must have shape (16, 3)",
        ),
        (
            {"weights": save(tmp_path / "w1.npz", **{**w, "log_std": np.zeros(2)})},
            "weights log_std has shape (2,)",
        ),
        (
            {"weights": save(tmp_path / "w2.npz", **no_log_std)},
            "the gaussian head's weights need its log_std",
        ),
    ]
    for replace, words in cases:
        assert run(**replace) == 2, words
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and words in err[0], (words, err)
    bad = save(tmp_path / "b4.npz", **{**gauss_batch(obs, a, adv), "low": HIGH, "high": LOW})
    assert run(batch=bad) == 2
    assert "low must be below high" in capsys.readouterr().err
