"""The heads' distributions (pgrl.distributions): log-probabilities, entropies and their gradients
against finite differences and against TensorFlow's own ops and GradientTape, on random shapes."""

import numpy as np
import pytest
from gradcheck import rel_err

from pgrl.distributions import HEADS, Bernoulli, Categorical, make_distribution
from pgrl.policies import make_policy

CASES = [("bernoulli", None), *(("categorical", n) for n in (2, 3, 5, 8))]


def _draw(dist, rng, scale=2.0):
    """Random logits z and valid actions for ``dist``, a random batch size."""
    n = int(rng.integers(1, 40))
    shape = (n,) if dist.n_outputs == 1 else (n, dist.n_actions)
    z = rng.standard_normal(shape) * scale
    a = rng.integers(0, dist.n_actions, n)
    return z, (a.astype(np.float64) if dist.action_kind == "float" else a)


def _fd(f, z, h=1e-3):
    """d f / d z for an f whose row t depends on row t of z alone: the fourth-order central
    stencil, one column of z at a time (error ~h^4, round-off ~1e-16 / h)."""
    z2 = z.reshape(len(z), -1)
    grad = np.zeros_like(z2)
    for j in range(z2.shape[1]):

        def at(d, j=j):
            zz = z2.copy()
            zz[:, j] += d
            return f(zz.reshape(z.shape))

        grad[:, j] = (8 * (at(h) - at(-h)) - (at(2 * h) - at(-2 * h))) / (12 * h)
    return grad.reshape(z.shape)


@pytest.mark.parametrize("head,n", CASES)
def test_gradients_against_finite_differences(head, n):
    dist, rng = make_distribution(head, n), np.random.default_rng(n or 0)
    for _ in range(5):
        z, a = _draw(dist, rng)
        fd = _fd(lambda zz, a=a: dist.log_prob(zz, a), z)
        assert rel_err(dist.dlog_prob(z, a), fd) < 1e-10
        assert rel_err(dist.onehot(a) - dist.probs(z), fd) < 1e-10
        assert rel_err(dist.dentropy(z), _fd(dist.entropy, z)) < 1e-10


@pytest.mark.parametrize("head,n", CASES)
def test_numpy_against_tensorflow(head, n, tf):
    """Values and gradients (by tf.GradientTape) of the TF twins, down to saturated logits."""
    dist, rng = make_distribution(head, n), np.random.default_rng(10 + (n or 0))
    for scale in (1.0, 8.0, 40.0):
        z, a = _draw(dist, rng, scale)
        zt = tf.constant(z)
        at = tf.constant(a)
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(zt)
            logp, h = dist.tf_log_prob(zt, at), dist.tf_entropy(zt)
            total_logp, total_h = tf.reduce_sum(logp), tf.reduce_sum(h)
        assert rel_err(dist.log_prob(z, a), logp.numpy()) < 1e-10
        assert rel_err(dist.entropy(z), h.numpy()) < 1e-10
        assert rel_err(dist.dlog_prob(z, a), tape.gradient(total_logp, zt).numpy()) < 1e-10
        assert rel_err(dist.dentropy(z), tape.gradient(total_h, zt).numpy()) < 1e-10
        out = z.reshape(len(z), -1)  # the network's outputs, whose logits are z
        tf_probs = dist.logits(dist.tf_probs(tf.constant(out)).numpy())
        assert rel_err(dist.probs(z), tf_probs) < 1e-12


@pytest.mark.parametrize("head,n", CASES)
def test_probabilities_sampling_and_logits(head, n):
    """``exp(log_prob)`` are the action probabilities; sampling follows them; logits of the
    network's (N, k) outputs."""
    dist, rng = make_distribution(head, n), np.random.default_rng(3)
    z, _ = _draw(dist, rng)
    probs = dist.action_probs(dist.probs(z))
    assert probs.shape == (len(z), dist.n_actions)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-12)
    for k in range(dist.n_actions):
        a = np.full(len(z), k, float if dist.action_kind == "float" else int)
        np.testing.assert_allclose(np.exp(dist.log_prob(z, a)), probs[:, k], rtol=1e-12)
    np.testing.assert_array_equal(dist.greedy(dist.probs(z)), np.argmax(probs, axis=1))
    one = z[:1]
    u = np.random.default_rng(0).random(100_000)
    a = dist.sample(np.repeat(dist.probs(one), len(u), axis=0), u).astype(int)
    np.testing.assert_allclose(
        np.bincount(a, minlength=dist.n_actions) / len(u), probs[0], atol=0.01
    )
    out = z.reshape(len(z), -1)
    np.testing.assert_array_equal(dist.logits(out), z)


def test_entropy_of_uniform_and_certain_policies():
    assert Bernoulli().entropy(np.array([0.0]))[0] == pytest.approx(np.log(2))
    assert Categorical(5).entropy(np.zeros((1, 5)))[0] == pytest.approx(np.log(5))
    assert Bernoulli().entropy(np.array([800.0]))[0] == 0.0
    assert np.all(np.isfinite(Categorical(3).dentropy(np.array([[800.0, -800.0, 0.0]]))))


@pytest.mark.parametrize("backend", ["numpy", "tensorflow"])
@pytest.mark.parametrize("head,n", CASES)
def test_policy_log_probs_are_the_heads(head, n, backend, request):
    """policy.log_probs = the distribution's log_prob of the policy's logits, in both backends."""
    if backend == "tensorflow":
        request.getfixturevalue("tf")
    policy = make_policy(backend, 5, hidden_sizes=(7,), head=head, n_actions=n, bias=True)
    rng = np.random.default_rng(1)
    obs = rng.standard_normal((9, 5))
    a = rng.integers(0, policy.n_actions, 9)
    z = policy.logits(obs)
    expected = policy.distribution.log_prob(z, a.astype(float) if n is None else a)
    assert rel_err(policy.log_probs(obs, a), expected) < 1e-12
    with pytest.raises(ValueError, match="actions must"):
        policy.log_probs(obs, np.full(9, policy.n_actions))


def test_bad_heads_and_action_counts():
    assert HEADS == ("bernoulli", "categorical", "gaussian")
    with pytest.raises(ValueError, match="head must be one of"):
        make_distribution("gaussian-ish")
    with pytest.raises(ValueError, match="the Bernoulli head has 2 actions"):
        make_distribution("bernoulli", 3)
    with pytest.raises(ValueError, match="needs n_actions"):
        make_distribution("categorical")
    with pytest.raises(ValueError, match="at least 2"):
        make_distribution("categorical", 1)


def test_action_spaces():
    from gymnasium import spaces

    assert Bernoulli().check_action_space(spaces.Discrete(2)) is None
    assert "Bernoulli head needs Discrete(2)" in Bernoulli().check_action_space(spaces.Discrete(3))
    assert Categorical(3).check_action_space(spaces.Discrete(3)) is None
    assert "3 actions" in Categorical(3).check_action_space(spaces.Discrete(3, start=1))
    assert "3 actions" in Categorical(3).check_action_space(spaces.Box(-1, 1, (3,)))
