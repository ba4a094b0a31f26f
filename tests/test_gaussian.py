"""The gaussian head and observation normalization.

Gradients of log pi, the entropy and PPO's surrogate with respect to every weight and ``log_std``:
both backends against finite differences of the formula written out here, and against each other.
Then the rollout (actions recorded as sampled, sent clipped), identical episodes of both backends
on Pendulum, exact resume with the observation statistics, every runner alike, files, eval, and
the one-line errors of action spaces no head plays."""

import csv

import gymnasium as gym
import numpy as np
import pytest
from gradcheck import finite_differences, rel_err

from pgrl.checkpoint import load_checkpoint, load_weights
from pgrl.config import ConfigError, load_config
from pgrl.distributions import Gaussian
from pgrl.envs import make_env
from pgrl.normalize import ObsNormalizer, obs_moments
from pgrl.play import evaluate, export_weights, load_policy
from pgrl.policies import make_policy
from pgrl.reinforce import train
from pgrl.rollout import ACTION_STEPS, make_vector_env, play_slots, slot_generators

BACKENDS = ("numpy", "tensorflow")
LOG_2PI = np.log(2 * np.pi)


def mlp(weights, x, n_layers):
    h = np.asarray(x, dtype=np.float64)
    for i in range(1, n_layers + 1):
        h = h @ weights[f"W{i}"] + weights.get(f"b{i}", 0)
        h = np.maximum(h, 0) if i < n_layers else h
    return h


def log_pi_and_entropy(weights, x, a, n_layers):
    """The density of DESIGN.md's gaussian head, written out: (N,) log pi(a | s) and H."""
    mu, log_std = mlp(weights, x, n_layers), weights["log_std"]
    sigma = np.exp(log_std)
    log_pi = -np.sum((a - mu) ** 2 / (2 * sigma**2) + log_std + 0.5 * LOG_2PI, axis=1)
    entropy = np.full(len(x), np.sum(log_std + 0.5 * np.log(2 * np.pi * np.e)))
    return log_pi, entropy


def loss(weights, x, a, adv, policy, old=None, clip=None):
    n_layers = len(policy.hidden_sizes) + 1
    lp, h = log_pi_and_entropy(weights, x, a, n_layers)
    if old is None:
        terms = -adv * lp
    else:
        rho = np.exp(lp - old)
        terms = -np.minimum(rho * adv, np.clip(rho, 1 - clip, 1 + clip) * adv)
    total = np.sum(terms) - policy.entropy_coef * np.sum(h)
    return total / len(x) if policy.reduction == "mean" else total


CASES = [  # obs_dim, hidden, d, bias, reduction, entropy_coef
    (3, (8,), 1, True, "sum", 0.0),
    (5, (6, 5), 2, True, "mean", 0.01),
    (4, (7,), 3, False, "sum", 0.05),
    (2, (4, 3), 4, True, "mean", 0.0),
    (6, (5,), 5, True, "sum", 0.1),
    (17, (9, 6), 6, True, "mean", 0.02),
]


def policies_with(case, rng):
    obs_dim, hidden, d, bias, reduction, coef = case
    kw = dict(hidden_sizes=hidden, head="gaussian", action_dim=d, bias=bias, seed=3)
    kw.update(reduction=reduction, entropy_coef=coef, init_log_std=-0.5)
    policies = {b: make_policy(b, obs_dim, **kw) for b in BACKENDS}
    weights = policies["numpy"].get_weights()
    weights["log_std"] = rng.normal(-0.3, 0.4, d)
    for name in weights:
        if name.startswith("b"):
            weights[name] = rng.normal(0.0, 0.1, weights[name].shape)
    for p in policies.values():
        p.set_weights(weights)
    return policies, weights


@pytest.mark.parametrize("case", CASES)
def test_log_prob_and_entropy_gradients(tf, case):
    """REINFORCE's loss with the entropy bonus, its gradient w.r.t. every weight and log_std,
    for actions inside and far outside the env's bounds [-1, 1] (the batch keeps the sampled
    action; the clipped one only reaches the env)."""
    rng = np.random.default_rng(len(case[1]) + case[2])
    policies, weights = policies_with(case, rng)
    n, d = 30, case[2]
    obs = rng.standard_normal((n, case[0]))
    for a in (rng.uniform(-1, 1, (n, d)), rng.normal(0.0, 3.0, (n, d))):
        adv = rng.standard_normal(n)
        p = policies["numpy"]

        def of(w, a=a, adv=adv, p=p):
            return loss(w, obs, a, adv, p)

        reference = finite_differences(of, weights)
        grads = {b: q.gradients(obs, a, adv) for b, q in policies.items()}
        assert set(grads["numpy"]) == set(weights) and "log_std" in weights
        for name in weights:
            assert rel_err(grads["numpy"][name], reference[name]) < 1e-6, name
            assert rel_err(grads["tensorflow"][name], grads["numpy"][name]) < 1e-10, name
        expected_lp, expected_h = log_pi_and_entropy(weights, obs, a, len(case[1]) + 1)
        for q in policies.values():
            assert rel_err(q.log_probs(obs, a), expected_lp) < 1e-12
            assert q.loss(obs, a, adv) == pytest.approx(loss(weights, obs, a, adv, p), rel=1e-12)
        z = p.logits(obs)
        assert rel_err(p.distribution.entropy(z), expected_h) < 1e-12
    # the entropy's gradient alone (zero advantages) moves log_std only, by -c per step
    if case[5]:
        zero = {b: q.gradients(obs, a, np.zeros(n)) for b, q in policies.items()}
        scale = n if case[4] == "mean" else 1
        for g in zero.values():
            np.testing.assert_allclose(g["log_std"] * scale, -case[5] * n, rtol=1e-12)
            assert all(not np.any(g[k]) for k in g if k != "log_std")


@pytest.mark.parametrize("case", CASES[:3])
def test_clipped_surrogate_gradients_with_the_gaussian_head(tf, case):
    rng = np.random.default_rng(7)
    policies, weights = policies_with(case, rng)
    n, d = 40, case[2]
    obs, a = rng.standard_normal((n, case[0])), rng.normal(0.0, 1.5, (n, d))
    adv = rng.standard_normal(n)
    lp, _ = log_pi_and_entropy(weights, obs, a, len(case[1]) + 1)
    old = lp + rng.normal(0.0, 0.4, n)  # densities: log-probs above 0 are allowed
    p = policies["numpy"]
    reference = finite_differences(lambda w: loss(w, obs, a, adv, p, old, 0.2), weights)
    grads = {b: q.gradients(obs, a, adv, old, 0.2) for b, q in policies.items()}
    for name in weights:
        assert rel_err(grads["numpy"][name], reference[name]) < 1e-6, name
        assert rel_err(grads["tensorflow"][name], grads["numpy"][name]) < 1e-10, name
    stats = {b: q.update(obs, a, adv, old, 0.2) for b, q in policies.items()}
    for key in ("loss", "approx_kl", "clip_fraction", "entropy", "mean_prob"):
        assert stats["numpy"][key] == pytest.approx(stats["tensorflow"][key], rel=1e-10), key
    after = {b: q.get_weights() for b, q in policies.items()}
    for name in weights:
        assert rel_err(after["tensorflow"][name], after["numpy"][name]) < 1e-12, name
        assert not np.array_equal(after["numpy"][name], weights[name]), name


def test_float32_backends_agree(tf):
    rng = np.random.default_rng(0)
    kw = dict(hidden_sizes=(32,), head="gaussian", action_dim=3, bias=True, dtype="float32")
    policies = {b: make_policy(b, 8, **kw) for b in BACKENDS}
    obs, a, adv = rng.standard_normal((64, 8)), rng.standard_normal((64, 3)), rng.normal(size=64)
    grads = {b: p.gradients(obs, a, adv) for b, p in policies.items()}
    for name, g in grads["numpy"].items():
        assert g.dtype == np.float32
        assert rel_err(grads["tensorflow"][name], g) < 1e-5, name


def test_sampling_greedy_and_what_the_head_refuses():
    policy = make_policy("numpy", 3, hidden_sizes=(5,), head="gaussian", action_dim=2, bias=True)
    obs = np.random.default_rng(0).standard_normal((4, 3))
    z = policy.logits(obs)
    mu, log_std = z[:, :2], z[:, 2:]
    np.testing.assert_array_equal(log_std, 0.0)  # init_log_std
    eps = np.random.default_rng(1).standard_normal((4, 2))
    np.testing.assert_array_equal(policy.sample(obs, eps), mu + np.exp(log_std) * eps)
    np.testing.assert_array_equal(policy.sample(obs, None, greedy=True), mu)
    assert policy.action_dim == 2 and policy.get_weights()["log_std"].shape == (2,)
    with pytest.raises(ValueError, match=r"actions must have shape \(4, 2\)"):
        policy.log_probs(obs, np.zeros(4))
    with pytest.raises(ValueError, match="NaN or inf"):
        policy.log_probs(obs, np.full((4, 2), np.nan))
    with pytest.raises(ValueError, match="densities, not action probabilities"):
        policy.action_probs(obs)
    with pytest.raises(ValueError, match="needs action_dim"):
        make_policy("numpy", 3, head="gaussian")
    with pytest.raises(ValueError, match="init_log_std is the gaussian head's"):
        make_policy("numpy", 3, head="categorical", n_actions=3, init_log_std=-1.0)
    with pytest.raises(ValueError, match="action_dim is the gaussian head's"):
        make_policy("numpy", 3, head="bernoulli", action_dim=1)


# ----- observation normalization -----


def test_normalizer_pools_slots_as_one_batch_and_checks_its_state():
    rng = np.random.default_rng(0)
    parts = [rng.normal(3.0, 2.0, (n, 4)) for n in (5, 1, 40, 17)]
    norm = ObsNormalizer(4)
    norm.update(obs_moments(p) for p in parts)
    x = np.concatenate(parts)
    # VecNormalize's prior: mean 0, variance 1, weight 1e-4
    prior = 1e-4
    mean = x.sum(axis=0) / (len(x) + prior)
    var = (prior * 1.0 + prior * mean**2 + np.sum((x - mean) ** 2, axis=0)) / (len(x) + prior)
    np.testing.assert_allclose(norm.mean, mean, rtol=1e-12)
    np.testing.assert_allclose(norm.var, var, rtol=1e-10)
    np.testing.assert_allclose(norm(x).mean(axis=0), 0.0, atol=1e-4)
    assert np.abs(norm(x * 1e6)).max() == 10.0  # clipped
    state = norm.state()
    other = ObsNormalizer(4)
    other.set_state(state)
    np.testing.assert_array_equal(other(x), norm(x))
    for bad, message in [
        ({**state, "obs_var": -state["obs_var"]}, "<= 0"),
        ({**state, "obs_mean": np.zeros(3)}, "shapes"),
        ({"obs_mean": state["obs_mean"]}, "missing"),
    ]:
        with pytest.raises(ValueError, match=message):
            other.set_state(bad)


# ----- the rollout, training, files -----


class _Recording(gym.ActionWrapper):
    """What the env was sent."""

    sent: list = []

    def action(self, action):
        _Recording.sent.append(np.array(action))
        return action


def test_the_batch_keeps_sampled_actions_and_the_env_gets_them_clipped():
    _Recording.sent = []
    envs = gym.vector.SyncVectorEnv(
        [lambda: _Recording(make_env("Pendulum-v1"))],
        autoreset_mode=gym.vector.AutoresetMode.DISABLED,
    )
    policy = make_policy(
        "numpy", 3, hidden_sizes=(8,), head="gaussian", action_dim=1, init_log_std=1.0
    )
    batch = play_slots(envs, policy, slot_generators(0, 1), [2])
    assert batch.actions.shape == (400, 1) and batch.actions.dtype == np.float32
    sent = np.array(_Recording.sent)
    assert sent.dtype == np.float32 and np.abs(sent).max() == 2.0  # Pendulum's bounds
    assert np.abs(batch.actions).max() > 2.0  # sigma = e: many draws beyond them
    # on a grid of 2**20 steps across [-2, 2]: within half a step of the clipped action
    step = 4.0 / ACTION_STEPS
    assert np.abs(sent - np.clip(batch.actions, -2, 2)).max() <= step / 2 + 1e-7
    np.testing.assert_array_equal((sent + 2) / step, np.round((sent + 2) / step))


def pendulum(*overrides):
    return load_config("pendulum_ppo", ["log.progress=false", *overrides])


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_backends_play_identical_pendulum_episodes(tmp_path, tf):
    """float64, the same seed: 200 episodes of the same returns to the last bit in both
    backends, while learning with normalized observations.

    The backends' weights differ in the last bits after an update (their matrix products add in
    different orders); the env's action grid absorbs that in ``mu``. How fast the difference
    grows depends on the step size: at 3e-5 it stays below 2e-15 for 20 updates; at 1e-4 it
    grows ~10x per update (4e-13 after 10 updates, 4e-10 after 13) and the episodes part at
    episode 54 of seed 0."""
    cfg = pendulum("train.episodes=200", "optimizer.learning_rate=3e-5")
    for backend in BACKENDS:
        train(cfg, out=tmp_path / backend, backend=backend)
    a, b = (read_rows(tmp_path / backend / "metrics.csv") for backend in BACKENDS)
    assert len(a) == len(b) == 200
    assert [r["return"] for r in a] == [r["return"] for r in b]
    assert (
        np.mean([float(r["return"]) for r in a[-20:]])
        > np.mean([float(r["return"]) for r in a[:20]]) + 300
    )  # it learned on the way
    stats = [load_checkpoint(tmp_path / b / "checkpoint.npz")["obs_norm"] for b in BACKENDS]
    for key, value in stats[0].items():
        np.testing.assert_array_equal(stats[1][key], value)
    assert stats[0]["obs_count"] == pytest.approx(200 * 200, abs=1e-3)


@pytest.mark.parametrize("backend", BACKENDS)
def test_resume_is_exact_with_the_observation_statistics(tmp_path, backend, tf):
    over = (f"policy.backend={backend}",)
    train(pendulum(*over, "train.episodes=24"), out=tmp_path / "full")
    train(pendulum(*over, "train.episodes=12"), out=tmp_path / "split")
    train(pendulum(*over, "train.episodes=24"), out=tmp_path / "split", resume=True)
    a, b = (load_checkpoint(tmp_path / d / "checkpoint.npz") for d in ("full", "split"))
    for part in ("weights", "optimizer_state", "value_weights", "obs_norm"):
        assert a[part]
        for name, w in a[part].items():
            np.testing.assert_array_equal(b[part][name], w, err_msg=f"{part} {name}")
    ra, rb = (read_rows(tmp_path / d / "metrics.csv") for d in ("full", "split"))
    assert [r["return"] for r in ra] == [r["return"] for r in rb]


def test_every_runner_gives_the_same_bits_with_normalized_observations(tmp_path):
    """REINFORCE's slot parts and the observation moments come from the workers: 4 local envs
    and 2 worker processes of 2 give the same weights and statistics."""
    common = ["train.algorithm=reinforce", "train.episodes=16", "train.batch_episodes=8"]
    common += ["train.standardize=batch"]
    local = pendulum(*common, "env.num_envs=4")
    procs = pendulum(*common, "env.runner=processes", "env.num_workers=2", "env.envs_per_worker=2")
    train(local, out=tmp_path / "local")
    train(procs, out=tmp_path / "procs")
    a, b = (load_checkpoint(tmp_path / d / "checkpoint.npz") for d in ("local", "procs"))
    for part in ("weights", "value_weights", "obs_norm"):
        for name, w in a[part].items():
            np.testing.assert_array_equal(b[part][name], w, err_msg=f"{part} {name}")


def test_export_load_and_eval_keep_the_statistics(tmp_path):
    train(pendulum("train.episodes=8"), out=tmp_path / "run")
    ckpt = load_checkpoint(tmp_path / "run" / "checkpoint.npz")
    export_weights(tmp_path / "run" / "checkpoint.npz", tmp_path / "w.npz")
    saved = load_weights(tmp_path / "w.npz")
    assert saved["head"] == "gaussian" and saved["n_actions"] == 1
    for key, value in ckpt["obs_norm"].items():
        np.testing.assert_array_equal(saved["obs_norm"][key], value)
    policy = load_policy(tmp_path / "w.npz")
    np.testing.assert_array_equal(policy.obs_norm.mean, ckpt["obs_norm"]["obs_mean"])
    obs = np.array([[1.0, 0.0, 0.5]])
    expected = policy.obs_norm(obs)
    fresh = make_policy("numpy", 3, hidden_sizes=(64, 64), bias=True, head="gaussian", action_dim=1)
    fresh.set_weights(ckpt["weights"])
    # the weights file holds float32 weights (pgrl export's default)
    np.testing.assert_allclose(policy.logits(obs), fresh.logits(expected), rtol=1e-6)
    result = evaluate(tmp_path / "w.npz", episodes=2, gif=tmp_path / "pendulum.gif")
    assert len(result["returns"]) == 2 and all(n == 200 for n in result["lengths"])
    assert (tmp_path / "pendulum.gif").read_bytes()[:6] == b"GIF89a"
    sampled = evaluate(tmp_path / "w.npz", episodes=2, greedy=False, backend="tensorflow")
    assert sampled["returns"] != result["returns"]
    # the statistics are part of the policy: a file without them does not load into it
    ckpt_without = dict(ckpt, obs_norm={})
    from pgrl.checkpoint import CheckpointError, restore_policy

    with pytest.raises(CheckpointError, match="holds no observation statistics"):
        restore_policy(policy, ckpt_without, "x.npz")


# ----- action spaces no head plays -----


class _Spaces(gym.Env):
    observation_space = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)

    def __init__(self, action_space):
        self.action_space = action_space

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(3, np.float32), {}

    def step(self, action):
        return np.zeros(3, np.float32), 0.0, True, False, {}


SPACES = {
    "pgrltest/InfiniteBox-v0": (
        gym.spaces.Box(-np.inf, np.inf, (2,), np.float32),
        "finite action bounds",
    ),
    "pgrltest/MatrixBox-v0": (gym.spaces.Box(-1.0, 1.0, (2, 2), np.float32), "1-D Box"),
    "pgrltest/MultiDiscrete-v0": (gym.spaces.MultiDiscrete([3, 2]), r"Discrete\(n\) actions"),
}
for _id, (_space, _) in SPACES.items():
    if _id not in gym.envs.registry:
        gym.register(_id, entry_point=_Spaces, kwargs={"action_space": _space})


@pytest.mark.parametrize("env_id", sorted(SPACES))
def test_unplayable_action_spaces_are_one_line_errors(tmp_path, env_id):
    message = SPACES[env_id][1]
    with pytest.raises(ValueError, match=message) as err:
        make_env(env_id)
    assert "\n" not in str(err.value)
    cfg = pendulum(f"env.id={env_id}", "env.normalize_obs=false")
    with pytest.raises(ConfigError, match=message) as err:
        train(cfg, out=tmp_path / "run")
    assert "\n" not in str(err.value) and not (tmp_path / "run").exists()
    assert Gaussian(2).check_action_space(SPACES[env_id][0]) is not None


def test_heads_that_do_not_fit_the_env_are_one_line_errors(tmp_path):
    with pytest.raises(ConfigError, match="the gaussian head needs Box actions") as err:
        cfg = pendulum("env.id=CartPole-v1", "env.normalize_obs=false", "train.solved_mean100=400")
        train(cfg, out=tmp_path / "a")
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="needs Discrete\\(2\\)"):
        train(pendulum("policy.head=bernoulli", "policy.init_log_std=0.0"), out=tmp_path / "b")
    with pytest.raises(ConfigError, match="policy.init_log_std is the gaussian head's"):
        over = ("policy.head=bernoulli", "policy.init_log_std=-1.0", "train.solved_mean100=400")
        pendulum("env.id=CartPole-v1", *over)
    with pytest.raises(ConfigError, match="env.normalize_obs is for small float observations"):
        load_config("pong", ["env.normalize_obs=true"])
    vec = make_vector_env("Pendulum-v1", 1)
    policy = make_policy("numpy", 3, head="gaussian", action_dim=2)
    with pytest.raises(ValueError, match="2 action dimensions"):
        play_slots(vec, policy, slot_generators(0, 1), [1])


CONTINUOUS = [
    "Pendulum-v1",
    "MountainCarContinuous-v0",
    "LunarLanderContinuous-v3",
    "BipedalWalker-v3",
    "InvertedPendulum-v5",
    "Hopper-v5",
    "HalfCheetah-v5",
]


@pytest.mark.parametrize("env_id", CONTINUOUS)
def test_continuous_envs_pass_gymnasiums_checker_and_play(env_id):
    from gymnasium.utils.env_checker import check_env

    env = make_env(env_id)
    check_env(env.unwrapped, skip_render_check=True)  # the env itself, without gym.make's wrappers
    d, obs_dim = env.action_space.shape[0], env.observation_space.shape[0]
    env.close()
    envs = make_vector_env(env_id, 2, max_episode_steps=30)
    policy = make_policy("numpy", obs_dim, hidden_sizes=(8,), head="gaussian", action_dim=d)
    batch = play_slots(envs, policy, slot_generators(0, 2), [1, 1])
    envs.close()
    assert batch.actions.shape == (batch.steps, d) and batch.n_episodes == 2


def test_pgrl_check_runs_on_a_gaussian_config(capsys):
    from pgrl.cli import main as cli_main

    assert cli_main(["check", "pendulum_ppo"]) == 0
    out = capsys.readouterr().out
    assert "PASS: the backends agree" in out and "log_std" in out
