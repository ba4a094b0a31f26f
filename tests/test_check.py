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

from pgrl.check import run_check, synthetic_batch
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


# ----- PPO: the clipped surrogate's rows, and its pitfalls under --explain -----

CARTPOLE_PPO = "cartpole_ppo"


def row(out, label):
    """(abs, rel, verdict) of a check row."""
    match = re.search(rf"^{re.escape(label)} +(\S+) +(\S+)  (ok|FAIL)$", out, re.M)
    assert match, f"no row {label!r} in:\n{out}"
    return float(match.group(1)), float(match.group(2)), match.group(3)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_check_ppo_rows_pass(capsys, dtype):
    sets = ["--set", f"policy.dtype={dtype}", "--set", "ppo.clip_value=0.5"]
    assert cli_main(["check", CARTPOLE_PPO, *sets]) == 0
    out = capsys.readouterr().out
    assert "batch 1024 (seed 0)" in out and "PASS: the backends agree" in out
    outside, clipped = map(int, re.search(r"(\d+)% of the ratios .*\n(\d+)% clipped", out).groups())
    assert 30 <= outside <= 70 and 10 <= clipped < outside  # both clipped and unclipped steps
    tol = 1e-10 if dtype == "float64" else 1e-5
    for label, limit in [
        ("PPO surrogate grads", tol),
        ("PPO finite diff.", 1e-6),
        ("clipped V gradients", tol),
        ("clipped V finite diff.", 1e-6),
    ]:
        _, rel, verdict = row(out, label)
        assert rel <= limit and verdict == "ok", (label, rel)
    # a REINFORCE config's report has none of them
    assert cli_main(["check", CARTPOLE]) == 0
    assert "PPO" not in capsys.readouterr().out


def test_check_ppo_rows_fail_for_a_wrong_surrogate(monkeypatch, capsys):
    """The NumPy backend's surrogate with its min taken before the sign: its gradients differ
    from TensorFlow's; with the correct loss beside them, also from finite differences."""
    from pgrl import objectives

    correct = objectives.ppo
    for loss_too, failed in (
        (True, "PPO surrogate grads"),
        (False, "PPO surrogate grads, PPO finite diff."),
    ):

        def minus_max(log_probs, advantages, old_log_probs, clip, loss_too=loss_too):
            rho = np.exp(log_probs - old_log_probs)
            a, b = rho * advantages, np.clip(rho, 1 - clip, 1 + clip) * advantages
            terms = (
                np.minimum(-a, -b)
                if loss_too
                else correct(log_probs, advantages, old_log_probs, clip)[0]
            )
            return terms, np.where(a >= b, -a, 0.0)

        monkeypatch.setattr(objectives, "ppo", minus_max)
        assert cli_main(["check", CARTPOLE_PPO]) == 1
        assert capsys.readouterr().out.splitlines()[-1] == f"FAIL: {failed} outside tolerance"


def hand_ppo_epochs(w, obs, a, adv, cfg, seed, recompute):
    """PPO's epochs written out (Bernoulli head, biases, mean reduction, Karpathy's RMSprop):
    log pi of the batch before and after."""
    o, p = cfg.optimizer, cfg.ppo
    w = {k: v.copy() for k, v in w.items()}
    v = {k: np.zeros_like(x) for k, x in w.items()}

    def log_pi(w, x, y):
        hs, z = hand_forward(w, x)
        return hs, z[:, 0], -np.logaddexp(0, np.where(y == 1, -z[:, 0], z[:, 0]))

    before = old = log_pi(w, obs, a)[2]
    order = np.random.default_rng([seed, 2])
    for _ in range(p.epochs):
        if recompute:
            old = log_pi(w, obs, a)[2]
        perm = order.permutation(len(a))
        for i in range(0, len(a), p.minibatch_size):
            idx = np.sort(perm[i : i + p.minibatch_size])
            x, y, lp_old = obs[idx], a[idx], old[idx]
            ad = (adv[idx] - adv[idx].mean()) / adv[idx].std()
            hs, z, lp = log_pi(w, x, y)
            rho = np.exp(lp - lp_old)
            through = rho * ad <= np.clip(rho, 1 - p.clip, 1 + p.clip) * ad
            dz = np.where(through, -ad * rho * (y - 1 / (1 + np.exp(-z))), 0.0) / len(idx)
            g = hand_backward(w, hs, dz[:, None])
            for k in w:
                v[k] = o.decay * v[k] + (1 - o.decay) * g[k] ** 2
                w[k] -= o.learning_rate * g[k] / (np.sqrt(v[k]) + o.epsilon)
    return before, log_pi(w, obs, a)[2]


def test_check_explain_ppo_pitfalls(tf, capsys):
    assert cli_main(["check", CARTPOLE_PPO, "--explain"]) == 0
    out = capsys.readouterr().out
    cfg = load_config(CARTPOLE_PPO)
    o, p = cfg.optimizer, cfg.ppo
    assert p.normalize_advantages and cfg.policy.reduction == "mean" and p.target_kl is None
    obs, a, adv = synthetic_batch(cfg, 4, n=1024, seed=0)
    w = reference_weights(cfg, 4, 1)
    hs, z = hand_forward(w, obs)
    log_pi = -np.logaddexp(0, np.where(a == 1, -z[:, 0], z[:, 0]))
    old = np.minimum(log_pi - np.random.default_rng(3).normal(0, 1.5 * p.clip, 1024), 0.0)
    idx = np.sort(np.random.default_rng([0, 2]).permutation(1024)[: p.minibatch_size])

    def tf_step(adv_mb, min_first=False):
        """RMSprop's first step from TensorFlow's gradients of the first minibatch's loss."""
        params = {k: tf.Variable(v) for k, v in w.items()}
        with tf.GradientTape() as tape:
            h = tf.nn.relu(tf.constant(obs[idx]) @ params["W1"] + params["b1"])
            logits = (h @ params["W2"] + params["b2"])[:, 0]
            labels = tf.constant(a[idx] * 1.0)
            lp = -tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits)
            rho = tf.exp(lp - old[idx])
            s1, s2 = rho * adv_mb, tf.clip_by_value(rho, 1 - p.clip, 1 + p.clip) * adv_mb
            terms = tf.minimum(-s1, -s2) if min_first else -tf.minimum(s1, s2)
            loss = tf.reduce_mean(terms)
        g = tape.gradient(loss, params)
        return first_step({k: g[k].numpy() for k in w}, o.learning_rate, o.decay, o.epsilon, False)

    def change(variant, reference):
        return np.linalg.norm(variant - reference) / np.linalg.norm(reference)

    def standardized(x):
        return (x - x.mean()) / x.std()

    reference = tf_step(standardized(adv[idx]))
    b = change(tf_step(standardized(adv[idx]), min_first=True), reference)
    c = change(tf_step(standardized(adv)[idx]), reference)
    assert b > 0.1 and c > 0.01  # both change the step, and the rows say by how much
    for label, value in (
        ("b min before the sign: -max(rho A, clip A)", b),
        ("c advantages standardized per batch", c),
    ):
        assert agree_to_3_digits(printed(out, label), value), (label, printed(out, label), value)
    # a: in float64 only round-off at this batch, a NaN update where probabilities underflow,
    # and a nonzero error wherever float32's probabilities round
    assert printed(out, "a ratio pi/pi_old, not exp(logp - logp_old)") < 1e-12
    assert "a: in float64, no difference at this batch but round-off." in out
    assert 0 < printed(out, "a ... in float32") < 1e-5
    assert 0 < printed(out, "a ... float32, median |z| = 12")
    assert 1e-4 < printed(out, "a ... there, the worst ratio's relative error")
    assert np.isnan(printed(out, "a ... float64, max |z| = 1000"))
    # d: the epochs written out here give the same drift, and recomputing moves much farther
    figures = {}
    for recompute in (False, True):
        before, after = hand_ppo_epochs(w, obs, a, adv, cfg, 0, recompute)
        rho = np.exp(after - before)
        figures[recompute] = (np.mean(rho - 1 - np.log(rho)), np.max(np.abs(rho - 1)))
    for label, value in (
        ("d approx. KL after 10 epochs", figures[False][0]),
        ("d ... KL, old log-probs recomputed per epoch", figures[True][0]),
        ("d max |rho - 1| after 10 epochs", figures[False][1]),
        ("d ... |rho - 1|, recomputed per epoch", figures[True][1]),
    ):
        assert agree_to_3_digits(printed(out, label), value), (label, printed(out, label), value)
    assert figures[True][0] > 5 * figures[False][0] and figures[True][1] > 2 * figures[False][1]


# ----- the gaussian head -----


def test_check_gaussian_pendulum_passes():
    """Pendulum-v1's Box(1) in [-2, 2]: the parity, finite-difference (log_std too), entropy,
    PPO and value rows, with sampled actions of which some lie beyond the env's bounds."""
    cfg = load_config("pendulum_ppo")
    lines, passed = run_check(cfg, 3, n_actions=1)
    out = "\n".join(lines)
    assert passed and "gaussian head, d = 1" in out and "PASS: the backends agree" in out
    for label in ("logits", "gradient log_std", "RMSprop step log_std", "finite diff. log_std"):
        assert row(out, label)[2] == "ok", label
    for label in ("entropy finite diff.", "PPO finite diff.", "value finite diff."):
        assert row(out, label)[2] == "ok", label
    beyond = int(re.search(r"actions mu \+ sigma \* N\(0, 1\), (\d+)% beyond", out).group(1))
    assert 0 < beyond < 50


def test_check_gaussian_synthetic_actions():
    cfg = load_config("pendulum_ppo")
    bounds = (np.array([-2.0, -1.0]), np.array([2.0, 1.0]))
    _, a, _ = synthetic_batch(cfg, 3, 400, seed=1, n_actions=2, bounds=bounds)
    assert a.shape == (400, 2) and a.dtype == np.float64
    beyond = np.mean((a < bounds[0]) | (a > bounds[1]), axis=0)
    assert np.all((0.25 < beyond) & (beyond < 0.4))  # P(|N(0, 1)| > 1) = 0.317


def test_check_gaussian_fails_for_a_wrong_log_std_gradient(monkeypatch):
    from pgrl.policies.numpy_policy import NumpyPolicy

    real = NumpyPolicy._gradients

    def per_sigma(self, *args):  # dL/dsigma in place of dL/dlog_std
        grads = real(self, *args)
        grads["log_std"] = grads["log_std"] * np.exp(-self.params["log_std"])
        return grads

    monkeypatch.setattr(NumpyPolicy, "_gradients", per_sigma)
    cfg = load_config("pendulum_ppo", ["policy.hidden_sizes=[16]"])
    lines, passed = run_check(cfg, 3, n_actions=1)
    out = "\n".join(lines)
    assert not passed
    assert row(out, "gradient log_std")[2] == "FAIL" and row(out, "gradient W1")[2] == "ok"
    assert row(out, "finite diff. log_std")[2] == "FAIL"


def gaussian_row(out, label):
    """(gradients, log_std, step) of a gaussian --explain row."""
    match = re.search(rf"^  {re.escape(label)} +(\S+) +(\S+) +(\S+)$", out, re.M)
    assert match, f"no row {label!r} in:\n{out}"
    return tuple(float(match.group(i)) for i in (1, 2, 3))


def test_check_explain_gaussian_figures():
    """d = 3 actions in [-1, 1]: each mistake's change of the gradients and of log_std's,
    against the log_std gradient written here by hand and the network's from TensorFlow-free
    pgrl.nn (the other layers scale, or are the same, but for the clipped action)."""
    cfg = load_config("pendulum_ppo", ["policy.hidden_sizes=[16]", "ppo.epochs=2"])
    d, bounds = 3, (-np.ones(3), np.ones(3))
    lines, passed = run_check(cfg, 3, explain=True, n_actions=d, bounds=bounds)
    out = "\n".join(lines)
    assert passed

    from pgrl.check import gaussian_weights
    from pgrl.policies import make_policy

    policy = make_policy(
        "numpy", 3, hidden_sizes=(16,), head="gaussian", action_dim=d, bias=True, seed=0
    )
    obs = synthetic_batch(cfg, 3, 256, 0, d, bounds)[0]
    w = gaussian_weights(policy.get_weights(), obs, bounds)
    np.testing.assert_allclose(w["log_std"], [-0.5, 0.0, 0.5])
    obs, a, adv = synthetic_batch(cfg, 3, 256, 0, d, bounds, w)
    policy.set_weights(w)
    mu = policy.logits(obs)[:, :d]
    sigma = np.exp(w["log_std"])

    def log_std_grad(actions, plus_one=False):  # mean reduction: -mean_t A_t dlogp/dlog_std
        u = (actions - mu) / sigma
        return -np.mean(adv[:, None] * (u**2 - (0 if plus_one else 1)), axis=0)

    def change(x, y):
        return np.linalg.norm(x - y) / np.linalg.norm(y)

    g = log_std_grad(a)
    clipped = np.clip(a, *bounds)
    expected = {
        "a dL/dsigma in place of dL/dlog_std": change(g / sigma, g),
        "b log pi without its -log sigma term": change(log_std_grad(a, True), g),
        "c log pi averaged over the d = 3 dims": 2 / 3,
        "d log pi of clip(a, low, high), not of a": change(log_std_grad(clipped), g),
    }
    for label, value in expected.items():
        assert agree_to_3_digits(gaussian_row(out, label)[1], value), label
    assert agree_to_3_digits(gaussian_row(out, "c log pi averaged over the d = 3 dims")[0], 2 / 3)
    # at init_log_std = 0, sigma = 1: the per-sigma gradient is the same number
    assert gaussian_row(out, "a ... at init_log_std = 0") == (0.0, 0.0, 0.0)
    beyond = np.mean(np.any((a < -1) | (a > 1), axis=1))
    assert f"{beyond:.0%} of the actions" in out
    assert "a ratio pi/pi_old, not exp(logp - logp_old)" in out
