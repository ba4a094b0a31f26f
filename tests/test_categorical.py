"""The categorical head: NumPy's hand-written gradients against finite differences and against
TensorFlow's GradientTape, at saturation, and as a reparametrization of the Bernoulli head."""

import csv

import numpy as np
import pytest
from gradcheck import rel_err

from pgrl.checkpoint import CheckpointError, load_checkpoint, load_weights, restore_policy
from pgrl.config import ConfigError, load_config
from pgrl.distributions import Categorical
from pgrl.envs import make_env
from pgrl.optim import RMSprop
from pgrl.play import evaluate, export_weights, load_policy
from pgrl.policies import make_policy
from pgrl.reinforce import train
from pgrl.rollout import (
    SEED_BOUND,
    collect_episodes,
    make_vector_env,
    slot_generators,
)
from pgrl.sparse import random_frame_differences

QUIET = ["log.progress=false"]

ACTION_COUNTS = range(2, 9)


def _config(n_actions: int):
    """A random network for ``n_actions`` (seeded by it): obs width, hidden sizes, bias and
    reduction."""
    rng = np.random.default_rng(100 + n_actions)
    return {
        "obs_dim": int(rng.integers(1, 9)),
        "hidden_sizes": tuple(int(h) for h in rng.integers(1, 12, size=rng.integers(1, 4))),
        "bias": bool(n_actions % 2),
        "reduction": ("sum", "mean")[n_actions % 3 == 0],
    }


def _batch(obs_dim: int, n_actions: int, n: int = 37, seed: int = 0):
    rng = np.random.default_rng(seed)
    obs = 2 * rng.standard_normal((n, obs_dim))
    return obs, rng.integers(0, n_actions, n), rng.standard_normal(n)


def _pair(n_actions: int, dtype: str = "float64", **kwargs):
    kwargs = {**_config(n_actions), **kwargs}
    obs_dim = kwargs.pop("obs_dim")
    return [
        make_policy(
            b, obs_dim, head="categorical", n_actions=n_actions, dtype=dtype, seed=3, **kwargs
        )
        for b in ("numpy", "tensorflow")
    ]


@pytest.mark.parametrize("n_actions", ACTION_COUNTS)
def test_numpy_gradients_match_finite_differences(n_actions):
    policy, _ = _pair(n_actions)
    obs, actions, adv = _batch(policy.obs_dim, n_actions)
    weights = policy.get_weights()
    grads = policy.gradients(obs, actions, adv)
    assert set(grads) == set(weights) and grads[f"W{len(policy.hidden_sizes) + 1}"].shape[1] == (
        n_actions
    )
    worst = 0.0
    for name, g in grads.items():
        for idx in np.ndindex(g.shape):
            if abs(g[idx]) < 1e-3 * np.max(np.abs(g)):
                continue  # only round-off to measure there
            eps = 1e-6 * max(1.0, abs(weights[name][idx]))
            losses = []
            for sign in (1, -1):
                probe = {k: v.copy() for k, v in weights.items()}
                probe[name][idx] += sign * eps
                policy.set_weights(probe)
                losses.append(policy.loss(obs, actions, adv))
            fd = (losses[0] - losses[1]) / (2 * eps)
            worst = max(worst, abs(fd - g[idx]) / max(abs(fd), abs(g[idx])))
    assert worst < 1e-6


@pytest.mark.parametrize("dtype, tol", [("float64", 1e-10), ("float32", 1e-5)])
@pytest.mark.parametrize("n_actions", ACTION_COUNTS)
def test_backends_agree(n_actions, dtype, tol):
    np_policy, tf_policy = _pair(n_actions, dtype)
    obs, actions, adv = _batch(np_policy.obs_dim, n_actions)
    for name, w in np_policy.get_weights().items():
        np.testing.assert_array_equal(w, tf_policy.get_weights()[name])
    probs = np_policy.action_probs(obs)
    assert probs.shape == (len(obs), n_actions) and probs.dtype == np.dtype(dtype)
    np.testing.assert_allclose(probs.sum(axis=1), 1, rtol=10 * tol)
    assert rel_err(probs, tf_policy.action_probs(obs)) < tol
    assert rel_err(np_policy.logits(obs), tf_policy.logits(obs)) < tol
    assert abs(np_policy.loss(obs, actions, adv) - tf_policy.loss(obs, actions, adv)) < tol * abs(
        np_policy.loss(obs, actions, adv)
    )
    g_np, g_tf = np_policy.gradients(obs, actions, adv), tf_policy.gradients(obs, actions, adv)
    for name in g_np:
        assert rel_err(g_np[name], g_tf[name]) < tol, name


def test_loss_is_the_sum_of_advantage_weighted_cross_entropies():
    """Checked against the definition, written out with Python floats, one step at a time."""
    policy = make_policy("numpy", 3, hidden_sizes=(5,), head="categorical", n_actions=4)
    obs, actions, adv = _batch(3, 4, n=6)
    z = policy.logits(obs)
    expected = 0.0
    for t in range(6):
        log_sum = np.log(sum(np.exp(float(v)) for v in z[t]))
        expected += adv[t] * (log_sum - z[t, actions[t]])
    assert policy.loss(obs, actions, adv) == pytest.approx(expected, rel=1e-12)
    probs = policy.action_probs(obs)
    np.testing.assert_allclose(probs, np.exp(z) / np.exp(z).sum(axis=1, keepdims=True), 1e-12)


@pytest.mark.parametrize("dtype, tol", [("float64", 1e-10), ("float32", 1e-5)])
def test_saturated_logits_stay_finite_and_agree(dtype, tol):
    """Logits beyond 800 overflow a naive exp (float64 too); both backends stay finite."""
    policies = _pair(5, dtype, hidden_sizes=(6,), bias=False, reduction="sum")
    obs_dim = policies[0].obs_dim
    weights = policies[0].get_weights()
    weights["W2"] = weights["W2"] * 3000.0
    obs, actions, adv = _batch(obs_dim, 5, n=40)
    for p in policies:
        p.set_weights(weights)
    z = policies[0].logits(obs)
    assert np.max(np.abs(z)) > 800
    # half the actions taken are those whose probability underflows to 0
    actions[::2] = np.argmin(z, axis=1)[::2]
    results = []
    for p in policies:
        probs = p.action_probs(obs)
        loss = p.loss(obs, actions, adv)
        grads = p.gradients(obs, actions, adv)
        assert np.all(np.isfinite(probs)) and np.isfinite(loss)
        assert all(np.all(np.isfinite(g)) for g in grads.values())
        results.append((probs, loss, grads))
    (p_np, l_np, g_np), (p_tf, l_tf, g_tf) = results
    assert rel_err(p_np, p_tf) < tol
    assert abs(l_np - l_tf) <= tol * abs(l_np) and abs(l_np) > 800
    for name in g_np:
        assert rel_err(g_np[name], g_tf[name]) < tol, name


@pytest.mark.parametrize("backend", ["numpy", "tensorflow"])
def test_two_action_categorical_is_the_bernoulli_policy(backend):
    """softmax((z0, z1))[1] = sigmoid(z1 - z0): a categorical policy with output weights (w0, w1)
    is the Bernoulli policy with w1 - w0, and its gradients map onto the Bernoulli ones."""
    kwargs = {"hidden_sizes": (8, 5), "bias": True, "seed": 4}
    cat = make_policy(backend, 3, head="categorical", n_actions=2, **kwargs)
    bern = make_policy(backend, 3, **kwargs)
    w = cat.get_weights()
    w["b3"] = np.array([0.3, -0.2])
    cat.set_weights(w)
    mapped = {k: v for k, v in w.items() if k not in ("W3", "b3")}
    mapped["W3"] = w["W3"][:, 1:] - w["W3"][:, :1]
    mapped["b3"] = w["b3"][1:] - w["b3"][:1]
    bern.set_weights(mapped)
    obs, actions, adv = _batch(3, 2)
    np.testing.assert_allclose(cat.action_probs(obs), bern.action_probs(obs), rtol=1e-12)
    np.testing.assert_allclose(cat.action_probs(obs)[:, 1], bern.action_prob(obs), rtol=1e-12)
    z = cat.logits(obs)
    np.testing.assert_allclose(z[:, 1] - z[:, 0], bern.logits(obs), rtol=1e-12, atol=1e-14)
    assert cat.loss(obs, actions, adv) == pytest.approx(bern.loss(obs, actions, adv), rel=1e-12)
    g_cat, g_bern = cat.gradients(obs, actions, adv), bern.gradients(obs, actions, adv)
    for name in ("W1", "b1", "W2", "b2"):
        np.testing.assert_allclose(g_cat[name], g_bern[name], rtol=1e-10, atol=1e-14)
    # dL/dz1 = -dL/dz0 = the Bernoulli dL/dz
    for name in ("W3", "b3"):
        np.testing.assert_allclose(g_cat[name][..., 1:], g_bern[name], rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(g_cat[name][..., :1], -g_bern[name], rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("dtype, tol", [("float64", 1e-10), ("float32", 1e-5)])
@pytest.mark.parametrize("inside", [False, True])
def test_rmsprop_updates_agree_across_backends(dtype, tol, inside):
    opt = dict(learning_rate=1e-2, decay=0.9, epsilon=1e-5, epsilon_inside_sqrt=inside)
    policies = [
        make_policy(
            b,
            6,
            hidden_sizes=(16,),
            head="categorical",
            n_actions=3,
            dtype=dtype,
            optimizer=RMSprop(**opt),
        )
        for b in ("numpy", "tensorflow")
    ]
    start = policies[0].get_weights()
    stats = []
    for k in range(4):
        obs, actions, adv = _batch(6, 3, n=50, seed=k)
        stats.append([p.update(obs, actions, adv) for p in policies])
    w_np, w_tf = (p.get_weights() for p in policies)
    for name in w_np:
        assert not np.allclose(w_np[name], start[name])
        assert rel_err(w_np[name] - start[name], w_tf[name] - start[name]) < tol, name
    s_np, s_tf = (p.get_optimizer_state() for p in policies)
    assert s_np["step"] == s_tf["step"] == 4
    for s in stats:
        for key in ("loss", "grad_norm", "mean_prob", "entropy"):
            assert s[0][key] == pytest.approx(s[1][key], rel=tol), key
        assert 0 < s[0]["entropy"] < np.log(3) and 0 < s[0]["mean_prob"] < 1


@pytest.mark.parametrize("dtype, tol", [("float64", 1e-10), ("float32", 1e-5)])
def test_backends_agree_on_sparse_integer_observations(dtype, tol):
    """Pong's int8 frame differences take the sparse first layer in both backends."""
    obs = random_frame_differences(np.random.default_rng(0), 20, 6400)
    policies = [
        make_policy(b, 6400, hidden_sizes=(10,), head="categorical", n_actions=6, dtype=dtype)
        for b in ("numpy", "tensorflow")
    ]
    rng = np.random.default_rng(1)
    actions, adv = rng.integers(0, 6, 20), rng.standard_normal(20)
    assert rel_err(*(p.action_probs(obs) for p in policies)) < tol
    g_np, g_tf = (p.gradients(obs, actions, adv) for p in policies)
    for name in g_np:
        assert rel_err(g_np[name], g_tf[name]) < tol, name


def test_bernoulli_action_probs_are_one_minus_p_and_p():
    policy = make_policy("numpy", 4, hidden_sizes=(5,))
    obs = np.random.default_rng(0).standard_normal((7, 4))
    p = policy.action_prob(obs)
    np.testing.assert_array_equal(policy.action_probs(obs), np.stack([1 - p, p], axis=1))
    assert policy.n_actions == 2 and policy.head == "bernoulli"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"head": "softmax"}, "head must be one of"),
        ({"head": "categorical"}, "the categorical head needs n_actions"),
        ({"head": "categorical", "n_actions": 1}, "n_actions must be at least 2, got 1"),
        ({"head": "categorical", "n_actions": 2.5}, "n_actions must be a positive integer"),
        ({"n_actions": 3}, "the Bernoulli head has 2 actions, got n_actions=3"),
    ],
)
def test_bad_head_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message) as err:
        make_policy("numpy", 4, **kwargs)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("backend", ["numpy", "tensorflow"])
def test_bad_actions_for_the_categorical_head(backend):
    policy = make_policy(backend, 2, hidden_sizes=(3,), head="categorical", n_actions=3)
    obs, adv = np.ones((3, 2)), np.ones(3)
    for actions, bad in (([0, 3, 1], r"\[3\]"), ([0, -1, 2], r"\[-1\]"), ([0.5, 1, 2], "0.5")):
        with pytest.raises(ValueError, match=rf"actions must be integers in \[0, 3\), got .*{bad}"):
            policy.gradients(obs, actions, adv)
    with pytest.raises(ValueError, match="use action_probs"):
        policy.action_prob(obs)
    grads = policy.gradients(obs, np.array([0.0, 2.0, 1.0]), adv)  # integral floats are fine
    assert grads["W2"].shape == (3, 3)


# ----- rollouts, envs, checkpoints and training with the categorical head -----


class FixedProbs:
    """A categorical policy stand-in: the same action probabilities for every observation."""

    def __init__(self, probs):
        self.probs = np.asarray(probs, dtype=np.float64)
        self.distribution = Categorical(len(self.probs))

    def sample(self, obs, u):
        return self.distribution.sample(np.tile(self.probs, (len(obs), 1)), u)


def test_sample_takes_the_first_action_whose_cumulative_probability_exceeds_u():
    policy = FixedProbs([0.2, 0.0, 0.5, 0.3])
    u = np.array([0.0, 0.1999, 0.2, 0.6999, 0.7, 0.99999, 0.2 + 0.5])
    obs = np.zeros((len(u), 1))
    expected = []
    for x in u:  # the rule written out: first k with u < p_0 + ... + p_k
        total = 0.0
        for k, p in enumerate(policy.probs):
            total += p
            if x < total:
                expected.append(k)
                break
    np.testing.assert_array_equal(policy.sample(obs, u), expected)
    # a total rounded below 1 never yields an action past the last
    short = FixedProbs([0.5, 0.5 - 1e-12])
    assert short.sample(np.zeros((1, 1)), np.array([1 - 1e-13]))[0] == 1
    # frequencies follow the probabilities
    u = np.random.default_rng(0).random(200_000)
    counts = np.bincount(policy.sample(np.zeros((len(u), 1)), u), minlength=4)
    np.testing.assert_allclose(counts / len(u), policy.probs, atol=0.005)


def test_acrobot_rollout_replays_from_one_uniform_per_step():
    """Every recorded action is the sampling rule applied to the policy's probabilities and the
    slot generator's next uniform, after the slot's env seed; the env replays the episode."""
    envs = make_vector_env("Acrobot-v1", 3, seed=0)
    policy = make_policy("numpy", 6, hidden_sizes=(8,), head="categorical", n_actions=3, seed=1)
    batch = collect_episodes(envs, policy, slot_generators(7, 3), 5)
    envs.close()
    assert batch.n_episodes == 5 and set(np.unique(batch.actions)) == {0, 1, 2}
    rngs, envs = slot_generators(7, 3), {}
    for k in range(batch.n_episodes):
        j = int(batch.ep_env[k])
        rng = rngs[j]
        if j not in envs:  # a slot's first episode of the batch starts at a seeded reset
            envs[j] = make_env("Acrobot-v1")
            obs, _ = envs[j].reset(seed=int(rng.integers(SEED_BOUND)))
        else:
            obs, _ = envs[j].reset()
        env = envs[j]
        ep_obs, actions, rewards = batch.episode(k)
        for t, a in enumerate(actions):
            np.testing.assert_array_equal(ep_obs[t], obs)
            cdf = np.cumsum(policy.action_probs(obs[None])[0])
            assert a == min(int(np.sum(rng.random() >= cdf)), 2)
            obs, r, terminated, truncated, _ = env.step(int(a))
            assert r == rewards[t] and (terminated or truncated) == (t == len(actions) - 1)
    for env in envs.values():
        env.close()


def test_rollouts_check_the_action_count():
    envs = make_vector_env("Acrobot-v1", 1)
    try:
        four = make_policy("numpy", 6, head="categorical", n_actions=4)
        with pytest.raises(ValueError, match=r"policy has 4 actions but .* Discrete\(3\)"):
            collect_episodes(envs, four, slot_generators(0, 1), 1)
        with pytest.raises(ValueError, match="Bernoulli head needs Discrete"):
            collect_episodes(envs, make_policy("numpy", 6), slot_generators(0, 1), 1)
    finally:
        envs.close()


def test_any_discrete_gymnasium_env_by_id():
    env = make_env("Acrobot-v1", seed=0)
    assert env.action_space.n == 3 and env.observation_space.shape == (6,)
    env.close()
    for env_id, message in [
        ("CarRacing-v3", r"needs flat Box observations .* Box\(0, 255, \(96, 96, 3\)"),
        ("FrozenLake-v1", r"needs flat Box observations .* Discrete\(16\)"),
        ("ALE/Breakout-v5", "unknown env id 'ALE/Breakout-v5'"),
        ("NoSuchEnv-v0", "unknown env id 'NoSuchEnv-v0'"),
    ]:
        with pytest.raises(ValueError, match=message) as err:
            make_env(env_id)
        assert "\n" not in str(err.value)


def test_bernoulli_config_on_a_three_action_env_is_one_line(tmp_path):
    cfg = load_config("acrobot", [*QUIET, "policy.head=bernoulli"])
    with pytest.raises(
        ConfigError, match=r"does not fit Acrobot-v1: .* Bernoulli head needs Discrete\(2\) actions"
    ) as err:
        train(cfg, out=tmp_path / "run")
    assert "\n" not in str(err.value)


def test_checkpoints_record_the_head_and_refuse_another(tmp_path):
    cfg = load_config("acrobot", [*QUIET, "train.episodes=20"])
    train(cfg, out=tmp_path / "cat")
    ckpt = load_checkpoint(tmp_path / "cat" / "checkpoint.npz")
    assert (ckpt["head"], ckpt["n_actions"]) == ("categorical", 3)
    (hidden,) = cfg.policy.hidden_sizes
    assert ckpt["weights"]["W2"].shape == (hidden, 3)
    export_weights(tmp_path / "cat" / "checkpoint.npz", tmp_path / "cat.npz")
    for source in (tmp_path / "cat" / "checkpoint.npz", tmp_path / "cat.npz"):
        data = load_weights(source)
        assert (data["head"], data["n_actions"]) == ("categorical", 3)
        for backend in ("numpy", "tensorflow"):
            policy = load_policy(source, backend=backend)
            assert policy.head == "categorical" and policy.n_actions == 3
        result = evaluate(source, episodes=2, seed=0)
        assert len(result["returns"]) == 2 and all(-500 <= r <= 0 for r in result["returns"])
    # a Bernoulli checkpoint into a categorical policy, and a wrong action count
    binary = load_config("cartpole", [*QUIET, "train.episodes=2", "train.batch_episodes=2"])
    train(binary, out=tmp_path / "bin")
    bin_ckpt = load_checkpoint(tmp_path / "bin" / "checkpoint.npz")
    assert (bin_ckpt["head"], bin_ckpt["n_actions"]) == ("bernoulli", 2)
    cases = [
        (bin_ckpt, make_policy("numpy", 4, hidden_sizes=(32,), head="categorical", n_actions=2)),
        (
            ckpt,
            make_policy(
                "numpy", 6, hidden_sizes=(hidden,), bias=True, head="categorical", n_actions=4
            ),
        ),
        (ckpt, make_policy("numpy", 6, hidden_sizes=(hidden,), bias=True)),
    ]
    for data, policy in cases:
        before = policy.get_weights()
        with pytest.raises(CheckpointError, match="holds a .* policy with .* but this policy") as e:
            restore_policy(policy, data, "ckpt.npz")
        assert "\n" not in str(e.value)
        for name, w in policy.get_weights().items():
            np.testing.assert_array_equal(w, before[name])


def test_acrobot_config_solves_acrobot(tmp_path):
    summary = train(load_config("acrobot", QUIET), out=tmp_path)
    assert summary["solved"] and summary["mean100"] >= -100, summary


@pytest.mark.parametrize("backend", ["numpy", "tensorflow"])
def test_categorical_head_learns_cartpole(tmp_path, backend):
    cfg = load_config("cartpole", [*QUIET, "policy.head=categorical"])
    summary = train(cfg, out=tmp_path, backend=backend)
    assert summary["solved"] and summary["mean100"] >= 475, summary


def test_acrobot_float64_backends_play_identical_episodes(tmp_path):
    cfg = load_config("acrobot", [*QUIET, "train.episodes=100", "train.solved_mean100=-1"])
    for backend in ("numpy", "tensorflow"):
        train(cfg, out=tmp_path / backend, backend=backend)
    a, b = (_returns(tmp_path / backend / "metrics.csv") for backend in ("numpy", "tensorflow"))
    assert len(a) == len(b) == 100 and a == b
    assert np.mean([float(r) for r in a[-20:]]) > np.mean([float(r) for r in a[:20]])


def _returns(path):
    with open(path, newline="") as f:
        return [row["return"] for row in csv.DictReader(f)]


# Pong with three actions (configs/pong_full.toml), cut to 100-step games
PONG_FULL_SHORT = [
    *QUIET,
    "policy.dtype=float64",
    "env.kwargs={max_episode_steps = 100}",
    "train.episodes=4",
    "train.batch_episodes=2",
]


def test_pong_with_three_actions_trains_and_plays_the_same_in_both_backends(tmp_path):
    """Two updates of pong_full in float64 with each backend: the same games and weights; the
    checkpoint's config carries env.actions, so eval and the trained policies play Discrete(3)
    Pong, the same actions in both backends."""
    cfg = load_config("pong_full", PONG_FULL_SHORT)
    for backend in ("numpy", "tensorflow"):
        summary = train(cfg, out=tmp_path / backend, backend=backend)
        assert summary["episodes"] == 4 and summary["updates"] == 2
    a, b = (_rows(tmp_path / backend / "metrics.csv") for backend in ("numpy", "tensorflow"))
    assert [(r["steps"], r["return"]) for r in a] == [(r["steps"], r["return"]) for r in b]
    assert [int(r["steps"]) for r in a] == [100, 200, 300, 400]
    ckpts = [load_checkpoint(tmp_path / b / "checkpoint.npz") for b in ("numpy", "tensorflow")]
    for ckpt in ckpts:
        assert (ckpt["head"], ckpt["n_actions"]) == ("categorical", 3)
        assert ckpt["weights"]["W2"].shape == (200, 3)
        assert 'actions = ["NOOP", "UP", "DOWN"]' in ckpt["config"]
    for name, w in ckpts[0]["weights"].items():
        np.testing.assert_allclose(ckpts[1]["weights"][name], w, rtol=0, atol=1e-10 * abs(w).max())

    # the trained policies play the same episodes, and every action occurs
    batches = []
    for backend in ("numpy", "tensorflow"):
        policy = load_policy(tmp_path / backend / "checkpoint.npz", backend=backend)
        envs = make_vector_env("ALE/Pong-v5", 1, actions=["NOOP", "UP", "DOWN"], **_SHORT)
        batches.append(collect_episodes(envs, policy, slot_generators(5, 1), 2))
        envs.close()
    np.testing.assert_array_equal(batches[0].actions, batches[1].actions)
    np.testing.assert_array_equal(batches[0].rewards, batches[1].rewards)
    assert set(np.unique(batches[0].actions)) == {0, 1, 2}

    source = tmp_path / "numpy" / "checkpoint.npz"
    export_weights(source, tmp_path / "pong_full.npz")
    for played in (source, tmp_path / "pong_full.npz"):
        for greedy in (True, False):
            result = evaluate(played, episodes=2, seed=0, greedy=greedy)
            assert result["lengths"] == [100, 100] and all(-2 <= r <= 0 for r in result["returns"])


def test_pong_actions_in_rollout_workers_and_eval_overrides(tmp_path):
    """A rollout worker builds the config's named actions, and
    eval's env_kwargs keep them; a checkpoint played with other actions is refused."""
    from pgrl.workers import RolloutWorker

    cfg = load_config("pong_full", PONG_FULL_SHORT)
    worker = RolloutWorker(cfg, "numpy", 2)
    try:
        assert worker.envs.single_action_space.n == 3 and worker.policy.n_actions == 3
        states = [g.bit_generator.state for g in slot_generators(0, 2)]
        batch, _, _, _ = worker.play(worker.policy.get_weights(), None, states, [1, 1], True)
        assert batch.n_episodes == 2 and batch.actions.max() <= 2
    finally:
        worker.envs.close()
    train(cfg, out=tmp_path / "run")
    ckpt = tmp_path / "run" / "checkpoint.npz"
    result = evaluate(ckpt, episodes=1, env_kwargs={"max_episode_steps": 50})
    assert result["lengths"] == [50]
    with pytest.raises(CheckpointError, match="3 actions") as err:
        evaluate(ckpt, episodes=1, env_kwargs={"actions": ["DOWN", "UP"]})
    assert "\n" not in str(err.value)


_SHORT = {"max_episode_steps": 100}


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_lunarlander_config_runs_one_update_with_both_backends(tmp_path):
    cfg = load_config("lunarlander_ppo", QUIET)
    assert (cfg.env.id, cfg.policy.head, cfg.train.algorithm, cfg.train.solved_mean100) == (
        "LunarLander-v3",
        "categorical",
        "ppo",
        200.0,
    )
    episodes = f"train.episodes={cfg.train.batch_episodes}"
    one_update = load_config("lunarlander_ppo", [*QUIET, episodes])
    for backend in ("numpy", "tensorflow"):
        summary = train(one_update, out=tmp_path / backend, backend=backend)
        assert (summary["updates"], summary["episodes"]) == (1, cfg.train.batch_episodes), summary
        ckpt = load_checkpoint(tmp_path / backend / "checkpoint.npz")
        assert (ckpt["head"], ckpt["n_actions"]) == ("categorical", 4)
        assert ckpt["weights"]["W1"].shape == (8, cfg.policy.hidden_sizes[0])
    # float64: both backends play the same first batch and take the same step
    a, b = (_returns(tmp_path / backend / "metrics.csv") for backend in ("numpy", "tensorflow"))
    assert len(a) == cfg.train.batch_episodes and a == b
    wa, wb = (
        load_checkpoint(tmp_path / backend / "checkpoint.npz")["weights"]
        for backend in ("numpy", "tensorflow")
    )
    for name in wa:
        np.testing.assert_allclose(wa[name], wb[name], rtol=0, atol=1e-12)
