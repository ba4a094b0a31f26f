"""The value baseline, the entropy bonus and gradient clipping: each backend against finite
differences, against the other backend, and against TensorFlow's and Keras's own versions; then
training with them: identical episodes in both backends, exact resume, and learning."""

import csv

import numpy as np
import pytest
from gradcheck import finite_differences, rel_err

from pgrl.build import build_policy, build_value_net
from pgrl.checkpoint import load_checkpoint
from pgrl.config import ConfigError, load_config
from pgrl.distributions import Bernoulli, Categorical
from pgrl.optim import RMSprop, clip_by_global_norm
from pgrl.policies import make_policy, make_value_net
from pgrl.reinforce import reinforce_update, train
from pgrl.returns import explained_variance
from pgrl.rollout import collect_episodes, make_vector_env, slot_generators
from pgrl.rundir import UPDATES_HEADER

QUIET = ["log.progress=false"]

# ----- references written out here, independently of the backends -----


def mlp(weights, x, n_layers, bias):
    """float64 outputs of the MLP: ReLU hidden layers, a linear last layer."""
    h = np.asarray(x, dtype=np.float64)
    for i in range(1, n_layers + 1):
        h = h @ weights[f"W{i}"] + (weights[f"b{i}"] if bias else 0)
        if i < n_layers:
            h = np.maximum(h, 0)
    return h


def value_loss(weights, x, returns, net):
    v = mlp(weights, x, len(net.hidden_sizes) + 1, net.bias)[:, 0]
    loss = 0.5 * np.sum((v - returns) ** 2)
    return loss / len(v) if net.reduction == "mean" else loss


def policy_loss(weights, x, actions, advantages, policy):
    """sum_t A_t * (-log pi(a_t | s_t)) - c * sum_t H(pi(. | s_t)), from log-probabilities."""
    z = mlp(weights, x, len(policy.hidden_sizes) + 1, policy.bias)
    if policy.head == "bernoulli":  # log pi over (action 0, action 1) = (log(1 - p), log p)
        z = np.stack([np.zeros(len(z)), z[:, 0]], axis=1)
    log_pi = z - np.logaddexp.reduce(z, axis=1, keepdims=True)
    ce = -log_pi[np.arange(len(actions)), actions.astype(int)]
    h = -np.sum(np.exp(log_pi) * log_pi, axis=1)
    loss = np.sum(advantages * ce) - policy.entropy_coef * np.sum(h)
    return loss / len(z) if policy.reduction == "mean" else loss


def assert_grads_close(a, b, tol):
    assert a.keys() == b.keys()
    for name in a:
        assert rel_err(a[name], b[name]) < tol, (name, rel_err(a[name], b[name]))


def batch(seed, n, obs_dim, n_actions=2):
    rng = np.random.default_rng(seed)
    obs = rng.standard_normal((n, obs_dim))
    actions = rng.integers(0, n_actions, n)
    return obs, actions, rng.standard_normal(n), rng.normal(20.0, 10.0, n)


# ----- the value network -----

VALUE_SHAPES = [  # obs_dim, hidden_sizes, bias, reduction
    (3, (5,), True, "sum"),
    (6, (4, 7), True, "mean"),
    (4, (8,), False, "sum"),
    (2, (3, 3, 3), True, "sum"),
]


@pytest.mark.parametrize("obs_dim, hidden, bias, reduction", VALUE_SHAPES)
def test_value_gradients_finite_differences_and_tensorflow(tf, obs_dim, hidden, bias, reduction):
    obs, _, _, returns = batch(obs_dim, 9, obs_dim)
    nets = {
        b: make_value_net(b, obs_dim, hidden_sizes=hidden, seed=3, bias=bias, reduction=reduction)
        for b in ("numpy", "tensorflow")
    }
    weights = nets["numpy"].get_weights()
    for w in weights.values():  # nonzero biases, so that they matter
        w += 0.1
    for net in nets.values():
        net.set_weights(weights)
    reference = finite_differences(lambda w: value_loss(w, obs, returns, nets["numpy"]), weights)
    grads = {b: net.gradients(obs, returns) for b, net in nets.items()}
    assert_grads_close(grads["numpy"], reference, 1e-6)
    assert_grads_close(grads["tensorflow"], grads["numpy"], 1e-10)
    v = mlp(weights, obs, len(hidden) + 1, bias)[:, 0]
    for net in nets.values():
        np.testing.assert_allclose(net.predict(obs), v, rtol=1e-12)
        assert net.loss(obs, returns) == pytest.approx(value_loss(weights, obs, returns, net))


def test_value_update_is_keras_rmsprop_step(tf, keras):
    """One update is Keras's own RMSprop step on the value loss's gradients (epsilon inside the
    square root, as Keras has it; a learning rate float32 holds exactly)."""
    obs, _, _, returns = batch(1, 12, 5)
    opt = RMSprop(2.0**-9, decay=0.9, epsilon=1e-7, epsilon_inside_sqrt=True)
    nets = [make_value_net(b, 5, hidden_sizes=(6,), optimizer=opt) for b in ("numpy", "tensorflow")]
    w0 = nets[0].get_weights()
    grads = nets[0].gradients(obs, returns)
    variables = {k: tf.Variable(w) for k, w in w0.items()}
    keras.optimizers.RMSprop(2.0**-9, rho=0.9, epsilon=1e-7).apply(
        [tf.constant(grads[k]) for k in variables], list(variables.values())
    )
    stats = [net.update(obs, returns) for net in nets]
    assert stats[0]["value_loss"] == pytest.approx(value_loss(w0, obs, returns, nets[0]))
    assert stats[1]["value_loss"] == pytest.approx(stats[0]["value_loss"], rel=1e-12)
    for net in nets:
        for name, w in net.get_weights().items():
            np.testing.assert_allclose(w, variables[name].numpy(), rtol=1e-10, atol=1e-14)


def test_value_float32_and_sparse_frames(tf):
    """float32 backends agree to 1e-5; int8 frame differences (Pong's) give the dense numbers."""
    rng = np.random.default_rng(2)
    frames = (rng.random((20, 50)) < 0.05) * rng.choice([-1, 1], (20, 50))
    frames = frames.astype(np.int8)
    returns = rng.standard_normal(20)
    for dtype, tol in (("float64", 1e-12), ("float32", 1e-5)):
        nets = [make_value_net(b, 50, dtype=dtype) for b in ("numpy", "tensorflow")]
        dense = frames.astype(dtype)
        for net in nets:
            np.testing.assert_allclose(net.predict(frames), net.predict(dense), rtol=tol)
            assert_grads_close(net.gradients(frames, returns), net.gradients(dense, returns), tol)
        assert_grads_close(
            nets[1].gradients(frames, returns), nets[0].gradients(frames, returns), tol
        )


def test_value_net_starts_from_its_own_numbers_and_validates():
    policy = make_policy("numpy", 4, hidden_sizes=(8,), bias=True, seed=0)
    value = make_value_net("numpy", 4, hidden_sizes=(8,), seed=0)
    assert not np.array_equal(policy.get_weights()["W1"], value.get_weights()["W1"])
    again = make_value_net("numpy", 4, hidden_sizes=(8,), seed=0)
    np.testing.assert_array_equal(again.get_weights()["W1"], value.get_weights()["W1"])
    obs = np.zeros((3, 4))
    for call, message in (
        (lambda: value.predict(np.zeros((3, 5))), "obs must have shape (N, 4)"),
        (lambda: value.update(obs, [1.0, 2.0]), "returns must have shape (3,)"),
        (lambda: value.update(obs, [1.0, np.nan, 2.0]), "returns contain NaN or inf"),
        (lambda: value.update(obs[:0], []), "empty batch"),
        (lambda: make_value_net("numpy", 4, max_grad_norm=0), "max_grad_norm must be"),
        (lambda: make_value_net("jax", 4), "backend must be one of"),
    ):
        with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
            call()


# ----- the entropy bonus -----

ENTROPY_CASES = [  # head, n_actions, reduction, coefficient
    ("bernoulli", 2, "sum", 0.5),
    ("bernoulli", 2, "mean", 0.05),
    *[("categorical", n, "sum", 0.3) for n in range(2, 9)],
    ("categorical", 4, "mean", 1.0),
]


@pytest.mark.parametrize("head, n_actions, reduction, coef", ENTROPY_CASES)
def test_entropy_bonus_gradients(tf, head, n_actions, reduction, coef):
    obs, actions, adv, _ = batch(n_actions, 7, 3, n_actions)
    kwargs = dict(
        hidden_sizes=(5,),
        bias=True,
        reduction=reduction,
        head=head,
        n_actions=n_actions if head == "categorical" else None,
        entropy_coef=coef,
    )
    policies = {b: make_policy(b, 3, **kwargs) for b in ("numpy", "tensorflow")}
    weights = policies["numpy"].get_weights()
    ref = finite_differences(
        lambda w: policy_loss(w, obs, actions, adv, policies["numpy"]), weights
    )
    grads = {b: p.gradients(obs, actions, adv) for b, p in policies.items()}
    assert_grads_close(grads["numpy"], ref, 1e-6)
    assert_grads_close(grads["tensorflow"], grads["numpy"], 1e-10)
    for p in policies.values():
        assert p.loss(obs, actions, adv) == pytest.approx(
            policy_loss(weights, obs, actions, adv, p), rel=1e-12
        )
    # the bonus changes the gradients: without it they differ
    plain = make_policy("numpy", 3, **{**kwargs, "entropy_coef": 0.0})
    assert rel_err(plain.gradients(obs, actions, adv)["W1"], grads["numpy"]["W1"]) > 1e-3


def test_entropy_stat_and_the_two_parametrizations():
    """H of the Bernoulli head at z equals H of a 2-action softmax at (0, z); the update's
    entropy statistic is its mean."""
    z = np.array([-30.0, -2.0, 0.0, 0.7, 5.0, 40.0])
    two = np.stack([np.zeros_like(z), z], axis=1)
    h = Bernoulli().entropy(z)
    np.testing.assert_allclose(h, Categorical(2).entropy(two), rtol=1e-12, atol=1e-15)
    p = 1 / (1 + np.exp(-z[1:-1]))
    np.testing.assert_allclose(h[1:-1], -(p * np.log(p) + (1 - p) * np.log(1 - p)))
    assert Categorical(5).entropy(np.zeros((1, 5)))[0] == pytest.approx(np.log(5))


@pytest.mark.parametrize("head, n_actions", [("bernoulli", 2), ("categorical", 5)])
def test_entropy_bonus_at_saturated_logits(tf, head, n_actions):
    """|z| > 800: every backend's loss and gradients stay finite and equal."""
    obs, actions, adv, _ = batch(5, 6, 3, n_actions)
    kwargs = dict(hidden_sizes=(4,), head=head, entropy_coef=0.2)
    kwargs["n_actions"] = n_actions if head == "categorical" else None
    policies = [make_policy(b, 3, **kwargs) for b in ("numpy", "tensorflow")]
    weights = policies[0].get_weights()
    weights["W2"] *= 1000 / np.max(np.abs(policies[0].logits(obs)))
    for p in policies:
        p.set_weights(weights)
    z = policies[0].logits(obs)
    assert np.max(np.abs(z)) > 800
    grads = [p.gradients(obs, actions, adv) for p in policies]
    for g in grads:
        assert all(np.isfinite(v).all() for v in g.values())
    assert_grads_close(grads[1], grads[0], 1e-10)
    losses = [p.loss(obs, actions, adv) for p in policies]
    assert np.isfinite(losses).all() and losses[1] == pytest.approx(losses[0], rel=1e-12)


# ----- clipping -----


def test_clip_by_global_norm_is_tensorflows(tf):
    rng = np.random.default_rng(0)
    grads = {"W1": rng.standard_normal((4, 3)), "b1": rng.standard_normal(3)}
    norm = np.sqrt(sum(np.sum(g**2) for g in grads.values()))
    for c in (0.1 * norm, 0.9 * norm, 2 * norm):
        clipped, got_norm = clip_by_global_norm(grads, c)
        expected, tf_norm = tf.clip_by_global_norm([tf.constant(g) for g in grads.values()], c)
        assert got_norm == pytest.approx(float(tf_norm), rel=1e-14)
        for g, e in zip(clipped.values(), expected, strict=True):
            np.testing.assert_allclose(g, e.numpy(), rtol=1e-14)
    # under the threshold: the very same numbers, not c * (1 / c) times them
    same, _ = clip_by_global_norm(grads, norm * 1.0000001)
    for name in grads:
        assert same[name].tobytes() == grads[name].tobytes()


def _net(kind, backend, max_grad_norm, optimizer=None):
    """A small policy or value network; RMSprop(1e-2) unless ``optimizer`` is given."""
    make = make_policy if kind == "policy" else make_value_net
    return make(
        backend, 3, hidden_sizes=(6,), bias=True, seed=1, max_grad_norm=max_grad_norm,
        optimizer=optimizer or RMSprop(1e-2),
    )  # fmt: skip


def _update(net, obs, actions, adv, returns):
    if hasattr(net, "action_probs"):
        return net.update(obs, actions, adv)["grad_norm"]
    return net.update(obs, returns)["value_grad_norm"]


@pytest.mark.parametrize("kind", ["policy", "value"])
@pytest.mark.parametrize("backend", ["numpy", "tensorflow"])
def test_clipping_under_the_threshold_changes_nothing(tf, kind, backend):
    obs, actions, adv, returns = batch(4, 10, 3)
    free = _net(kind, backend, None)
    norm = _update(free, obs, actions, adv, returns)
    loose = _net(kind, backend, norm * 1.0000001)
    _update(loose, obs, actions, adv, returns)
    for name, w in free.get_weights().items():
        assert loose.get_weights()[name].tobytes() == w.tobytes(), name
    for name, v in free.get_optimizer_state().items():
        assert np.asarray(loose.get_optimizer_state()[name]).tobytes() == np.asarray(v).tobytes()


@pytest.mark.parametrize("kind", ["policy", "value"])
def test_clipped_step_is_keras_global_clipnorm(tf, keras, kind):
    """Both backends take Keras's own ``RMSprop(global_clipnorm=c)`` step (epsilon inside the
    square root, as Keras has it), to float64 rounding."""
    obs, actions, adv, returns = batch(5, 10, 3)
    opt = RMSprop(2.0**-7, decay=0.9, epsilon=1e-7, epsilon_inside_sqrt=True)
    nets = [_net(kind, backend, 0.05, opt) for backend in ("numpy", "tensorflow")]
    w0 = nets[0].get_weights()
    if kind == "policy":
        grads = nets[0].gradients(obs, actions, adv)
    else:
        grads = nets[0].gradients(obs, returns)
    assert np.sqrt(sum(np.sum(g**2) for g in grads.values())) > 0.05  # clipping is at work
    variables = {k: tf.Variable(w) for k, w in w0.items()}
    keras.optimizers.RMSprop(2.0**-7, rho=0.9, epsilon=1e-7, global_clipnorm=0.05).apply(
        [tf.constant(grads[k]) for k in variables], list(variables.values())
    )
    for net in nets:
        _update(net, obs, actions, adv, returns)
        for name, w in net.get_weights().items():
            np.testing.assert_allclose(w, variables[name].numpy(), rtol=1e-10, atol=1e-13)


# ----- training with a baseline -----


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def cartpole(*overrides):
    return load_config("cartpole", [*QUIET, *overrides])


VALUE_RUN = (
    "train.baseline=value",
    "value.learning_rate=0.01",
    "value.steps=5",
    "optimizer.entropy_coef=0.01",
)


def test_value_baseline_backends_play_identical_episodes(tmp_path, tf):
    cfg = cartpole(*VALUE_RUN, "train.episodes=240", "train.solved_mean100=1000")
    for backend in ("numpy", "tensorflow"):
        train(cfg, out=tmp_path / backend, backend=backend)
    a, b = (read_rows(tmp_path / backend / "metrics.csv") for backend in ("numpy", "tensorflow"))
    assert len(a) == len(b) == 240
    assert [r["return"] for r in a] == [r["return"] for r in b]
    ua, ub = (read_rows(tmp_path / backend / "updates.csv") for backend in ("numpy", "tensorflow"))
    for key in ("value_loss", "explained_variance", "entropy"):
        np.testing.assert_allclose(
            [float(r[key]) for r in ua], [float(r[key]) for r in ub], rtol=1e-6
        )
    ev = [float(r["explained_variance"]) for r in ua]
    assert np.mean(ev[-5:]) > max(np.mean(ev[:2]), 0.05), ev  # V(s) learned something


@pytest.mark.parametrize("backend", ["numpy", "tensorflow"])
@pytest.mark.parametrize("bootstrap", [True, False])
def test_truncated_episodes_bootstrap_from_v_of_their_last_state(backend, bootstrap):
    cfg = cartpole(
        *VALUE_RUN,
        f"policy.backend={backend}",
        f"value.bootstrap={str(bootstrap).lower()}",
        "env.kwargs={max_episode_steps = 25}",
    )
    policy, value = build_policy(cfg, 4), build_value_net(cfg, 4)
    envs = make_vector_env("CartPole-v1", 4, vectorization="sync", max_episode_steps=25)
    try:
        batch = collect_episodes(envs, policy, slot_generators(5, 4), 12)
    finally:
        envs.close()
    assert batch.ep_truncated.any() and not batch.ep_truncated.all()
    # the value net's targets, written out: G_t = r_t + gamma G_{t+1}, and after the last step
    # V(s_T) of the state a truncated episode was cut at (0 after a fall)
    gamma, targets = cfg.train.gamma, []
    for k in range(batch.n_episodes):
        _, _, rewards = batch.episode(k)
        cut = batch.ep_truncated[k] and bootstrap
        g = float(value.predict(batch.last_obs[k : k + 1])[0]) if cut else 0.0
        returns = []
        for r in rewards[::-1]:
            g = r + gamma * g
            returns.append(g)
        targets.extend(returns[::-1])
    expected = build_value_net(cfg, 4)
    reinforce_update(policy, value, batch, cfg)
    for _ in range(cfg.value.steps):
        expected.update(batch.obs, np.array(targets))
    for name, w in value.get_weights().items():
        np.testing.assert_allclose(w, expected.get_weights()[name], rtol=1e-12, err_msg=name)


@pytest.mark.parametrize("backend", ["numpy", "tensorflow"])
def test_resume_with_a_value_network_is_exact(tmp_path, backend):
    overrides = [*VALUE_RUN, f"policy.backend={backend}", "train.batch_episodes=5"]
    train(cartpole(*overrides, "train.episodes=40"), out=tmp_path / "full")
    train(cartpole(*overrides, "train.episodes=20"), out=tmp_path / "split")
    train(cartpole(*overrides, "train.episodes=40"), out=tmp_path / "split", resume=True)
    a, b = (load_checkpoint(tmp_path / d / "checkpoint.npz") for d in ("full", "split"))
    assert a["value_weights"] and a["value_weights"].keys() == b["value_weights"].keys()
    for part in ("weights", "optimizer_state", "value_weights", "value_optimizer_state"):
        for name, w in a[part].items():
            np.testing.assert_array_equal(b[part][name], w, err_msg=f"{part} {name}")
    rows = [read_rows(tmp_path / d / "updates.csv") for d in ("full", "split")]
    drop = ("rollout_seconds", "update_seconds", "gradient_seconds")
    assert [{k: v for k, v in r.items() if k not in drop} for r in rows[0]] == [
        {k: v for k, v in r.items() if k not in drop} for r in rows[1]
    ]


def test_baseline_changes_on_resume_and_value_less_checkpoints(tmp_path):
    train(cartpole("train.episodes=20"), out=tmp_path)
    rows = read_rows(tmp_path / "updates.csv")
    assert all(r["value_loss"] == "nan" and r["explained_variance"] == "nan" for r in rows)
    with pytest.raises(ConfigError, match="train.baseline"):
        train(cartpole(*VALUE_RUN, "train.episodes=40"), out=tmp_path, resume=True)
    # asked for explicitly: the value network starts fresh, and is in the checkpoint from now on
    summary = train(
        cartpole(*VALUE_RUN, "train.episodes=40"), out=tmp_path, resume=True, allow_changes=True
    )
    assert summary["episodes"] == 40
    assert load_checkpoint(tmp_path / "checkpoint.npz")["value_weights"]
    rows = read_rows(tmp_path / "updates.csv")
    assert rows[0]["value_loss"] == "nan" and np.isfinite(float(rows[-1]["value_loss"]))


def test_updates_of_an_older_run_are_kept_on_resume(tmp_path):
    """updates.csv written without the value columns: resume keeps its rows (NaN there)."""
    train(cartpole("train.episodes=40"), out=tmp_path)
    path = tmp_path / "updates.csv"
    rows = read_rows(path)
    old = [c for c in UPDATES_HEADER if c not in ("value_loss", "explained_variance")]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, old, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    train(cartpole("train.episodes=60"), out=tmp_path, resume=True)
    assert [r["update"] for r in read_rows(path)] == [str(i) for i in range(1, 4)]


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.baseline=critic", "'train.baseline' must be one of none, value"),
        ("optimizer.entropy_coef=-0.1", "'optimizer.entropy_coef' must be a finite number >= 0"),
        ("optimizer.max_grad_norm=0", "'optimizer.max_grad_norm' must be a finite number > 0"),
        ("value.max_grad_norm=-1", "'value.max_grad_norm' must be a finite number > 0"),
        ("value.learning_rate=0", "'value.learning_rate' must be > 0"),
        ("value.hidden_sizes=[0]", "'value.hidden_sizes' must be a list of sizes >= 1"),
        ("value.widths=[4]", "unknown key 'value.widths'"),
    ],
)
def test_config_mistakes_are_one_line(override, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        cartpole(override)


def test_explained_variance():
    g = np.array([1.0, 2.0, 4.0, 8.0])
    assert explained_variance(g, g) == 1.0
    assert explained_variance(np.full(4, g.mean()), g) == pytest.approx(0.0)
    assert explained_variance(-g, g) < 0
    assert np.isnan(explained_variance(g, np.ones(4)))


@pytest.mark.parametrize("backend", ["numpy", "tensorflow"])
def test_cartpole_with_a_value_baseline_solves(tmp_path, backend):
    summary = train(cartpole(*VALUE_RUN), out=tmp_path, backend=backend)
    assert summary["solved"] and summary["episodes"] <= 2000, summary
