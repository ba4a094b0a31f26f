"""The two backends against independent references: finite differences, each other, and TF."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest
from gradcheck import finite_differences, rel_err
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pgrl.optim import RMSprop
from pgrl.policies import NumpyPolicy, make_policy

# ----- helpers -----


def reference_loss(weights, obs, actions, advantages, reduction, n_hidden, bias):
    """L = sum_t A_t * BCE(a_t, z_t), written out independently of the backends."""
    h = obs
    for i in range(1, n_hidden + 1):
        h = h @ weights[f"W{i}"] + (weights[f"b{i}"] if bias else 0)
        h = np.maximum(h, 0)
    z = (h @ weights[f"W{n_hidden + 1}"])[:, 0] + (weights[f"b{n_hidden + 1}"][0] if bias else 0)
    # -[y log s(z) + (1-y) log(1-s(z))] = log(1 + e^z) - y z
    loss = np.sum(advantages * (np.logaddexp(0, z) - actions * z))
    return loss / len(z) if reduction == "mean" else loss


def finite_difference_grads(policy, obs, actions, advantages):
    n_hidden = len(policy.hidden_sizes)

    def loss(w):
        return reference_loss(w, obs, actions, advantages, policy.reduction, n_hidden, policy.bias)

    return finite_differences(loss, policy.get_weights())


def reference_forward(weights, obs, n_layers, bias):
    """float64 activations [h_0 = obs, ..., h_L] and logits z, written out independently."""
    hs = [obs.astype(np.float64)]
    for i in range(1, n_layers + 1):
        a = hs[-1] @ weights[f"W{i}"].astype(np.float64)
        if bias:
            a = a + weights[f"b{i}"]
        hs.append(np.maximum(a, 0) if i < n_layers else a[:, 0])
    return hs[:-1], hs[-1]


def gradient_scale(weights, hs, dz_abs, bias, reduction):
    """Backprop of |dz| through |W| and |h|: per entry, the sum of the magnitudes it adds up."""
    n_layers = len(hs)
    dh = dz_abs[:, None] / (len(dz_abs) if reduction == "mean" else 1)
    scale = {}
    for i in range(n_layers, 0, -1):
        scale[f"W{i}"] = np.abs(hs[i - 1]).T @ dh
        if bias:
            scale[f"b{i}"] = dh.sum(axis=0)
        if i > 1:
            dh = (dh @ np.abs(weights[f"W{i}"]).T) * (hs[i - 1] > 0)
    return scale


def assert_backends_agree(np_policy, tf_pol, obs, actions, advantages):
    """Probabilities and gradients agree to 1e-10 (float64) / 1e-5 (float32), relative.

    "Relative" is against the magnitudes that were added up, as in the standard forward-error
    bound of a dot product (|fl(x.w) - x.w| <= c eps |x|.|w|): two correct implementations that
    sum a batch in different orders differ by ~eps * sum_t |g_t|, however much the terms cancel.
    Two effects widen a step's tolerance beyond rtol, both at the level of machine epsilon:
    - a rounding error in z becomes a relative error in sigmoid(z) once it saturates, so each
      step's rtol grows by eps times its logit's magnitude scale (|x| |W1| ... |Wn|)_t;
    - TF's gradient of sigmoid_cross_entropy_with_logits adds O(1) terms that cancel
      (1 - y - sigmoid(-z)), so its dL/dz carries an absolute error ~eps * |A_t|.
    In float64 both are far below 1e-10 of any gradient entry that is not itself ~0.
    """
    dtype = np_policy.dtype
    rtol = 1e-10 if dtype == np.float64 else 1e-5
    eps, tiny = np.finfo(dtype).eps, np.finfo(dtype).tiny  # TF flushes float32 denormals
    weights = np_policy.get_weights()
    n_layers = len(np_policy.hidden_sizes) + 1
    hs, z = reference_forward(weights, obs, n_layers, np_policy.bias)
    zscale = np.abs(obs.astype(np.float64))
    for i in range(1, n_layers + 1):
        zscale = zscale @ np.abs(weights[f"W{i}"].astype(np.float64))
        if np_policy.bias:
            zscale = zscale + np.abs(weights[f"b{i}"])
    step_rtol = rtol + 4 * n_layers * eps * zscale[:, 0]

    p_np, p_tf = np_policy.action_prob(obs), tf_pol.action_prob(obs)
    assert p_np.dtype == p_tf.dtype == dtype
    assert p_np.shape == p_tf.shape == (len(obs),)
    assert np.all(np.abs(p_np - p_tf) <= step_rtol * p_np + tiny)

    g_np = np_policy.gradients(obs, actions, advantages)
    g_tf = tf_pol.gradients(obs, actions, advantages)
    # |sigmoid(z) - a|, computed without cancellation
    dz_abs = np.abs(advantages) * np.exp(-np.logaddexp(0, np.where(actions == 1, z, -z)))
    bias, reduction = np_policy.bias, np_policy.reduction
    scale_true = gradient_scale(weights, hs, step_rtol * dz_abs, bias, reduction)
    scale_cancel = gradient_scale(weights, hs, 4 * eps * np.abs(advantages), bias, reduction)
    for name in np_policy.shapes:
        assert np.all(np.isfinite(g_np[name])) and np.all(np.isfinite(g_tf[name]))
        assert g_np[name].dtype == g_tf[name].dtype == dtype
        # plus a few eps of the layer's largest entry: per entry, the magnitude bounds above
        # can undershoot where a small entry sums terms that the weights' rounding touches more
        # (hypothesis found one: float32, weights ~0.01, both backends within 1.3 eps of the
        # float64 gradient's largest entry)
        floor = 4 * eps * np.abs(g_np[name]).max()
        bound = 2 * (scale_true[name] + scale_cancel[name]) + floor + tiny
        excess = np.abs(g_np[name] - g_tf[name]) / bound
        assert np.max(excess) <= 1, (name, float(np.max(excess)))


def random_batch(rng, n, obs_dim, obs_scale=1.0):
    obs = rng.standard_normal((n, obs_dim)) * obs_scale
    actions = (rng.random(n) < 0.5).astype(np.float64)
    advantages = rng.standard_normal(n)
    return obs, actions, advantages


_TF_CACHE = {}


def tf_policy(obs_dim, hidden_sizes, bias, reduction, dtype):
    """TF policies are cached per architecture: building and tracing costs ~0.3 s each."""
    key = (obs_dim, hidden_sizes, bias, reduction, dtype)
    if key not in _TF_CACHE:
        _TF_CACHE[key] = make_policy(
            "tensorflow",
            obs_dim=obs_dim,
            hidden_sizes=hidden_sizes,
            bias=bias,
            reduction=reduction,
            dtype=dtype,
        )
    return _TF_CACHE[key]


# ----- finite differences -----


@pytest.mark.parametrize("hidden_sizes", [(1,), (4,), (16,), (3, 5), (8, 8)])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_numpy_gradients_match_finite_differences(hidden_sizes, bias, reduction):
    rng = np.random.default_rng(hash((hidden_sizes, bias, reduction)) % 2**32)
    policy = NumpyPolicy(
        5, hidden_sizes, seed=int(rng.integers(1000)), bias=bias, reduction=reduction
    )
    if bias:  # non-zero biases, so their gradients are exercised through the ReLUs too
        w = policy.get_weights()
        for name in w:
            if name.startswith("b"):
                w[name] = 0.3 * rng.standard_normal(w[name].shape)
        policy.set_weights(w)
    obs, actions, advantages = random_batch(rng, 12, 5)
    grads = policy.gradients(obs, actions, advantages)
    fd = finite_difference_grads(policy, obs, actions, advantages)
    assert set(grads) == set(fd) == set(policy.shapes)
    for name in grads:
        assert grads[name].shape == policy.shapes[name]
        assert rel_err(grads[name], fd[name]) < 1e-6, name
    assert any(np.abs(g).max() > 1e-3 for g in grads.values())  # not a vacuous comparison


# ----- the question that started pgrl -----


def test_regression_logit_vs_sigmoid_derivative():
    x = np.array([[0.0, 1.0]])
    label = np.array([0.0])
    W1 = np.arange(6.0).reshape(2, 3)
    W2 = np.arange(3.0).reshape(3, 1)
    for backend in ("numpy", "tensorflow"):
        policy = make_policy(backend, obs_dim=2, hidden_sizes=(3,))
        policy.set_weights({"W1": W1, "W2": W2})
        g = policy.gradients(x, label, np.ones(1))
        # z = 14, sigmoid(14) - 0 = 0.99999917
        np.testing.assert_allclose(g["W1"], [[0, 0, 0], [0, 1, 2]], atol=1e-5)
        np.testing.assert_allclose(g["W2"], [[3], [4], [5]], atol=1e-5)

    # The classic mistake: back-propagating dL/dz = z - y (the logit) instead of sigmoid(z) - y.
    h = np.maximum(x @ W1, 0)
    z = h @ W2
    dz_wrong = z - label[:, None]
    dW2_wrong = h.T @ dz_wrong
    dh = dz_wrong @ W2.T
    dh[h <= 0] = 0
    dW1_wrong = x.T @ dh
    np.testing.assert_array_equal(dW1_wrong, [[0, 0, 0], [0, 14, 28]])
    np.testing.assert_array_equal(dW2_wrong, [[42], [56], [70]])


# ----- NumPy vs TensorFlow -----

ARCHS = [
    (3, (4,), False, "sum"),
    (8, (16,), True, "mean"),
    (5, (5, 7), False, "mean"),
    (2, (3, 6), True, "sum"),
]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    arch=st.sampled_from(ARCHS),
    dtype=st.sampled_from(["float64", "float32"]),
    n=st.integers(1, 40),
    seed=st.integers(0, 2**32 - 1),
    weight_scale=st.sampled_from([0.01, 1.0, 20.0]),
    obs_scale=st.sampled_from([0.0, 1.0, 10.0]),
    dead_fraction=st.sampled_from([0.0, 0.5]),
)
@example(
    arch=ARCHS[0],
    dtype="float64",
    n=7,
    seed=3,
    weight_scale=20.0,
    obs_scale=10.0,
    dead_fraction=0.0,
)
@example(
    arch=ARCHS[2],
    dtype="float32",
    n=7,
    seed=3,
    weight_scale=20.0,
    obs_scale=10.0,
    dead_fraction=0.5,
)
def test_backends_agree(arch, dtype, n, seed, weight_scale, obs_scale, dead_fraction):
    obs_dim, hidden_sizes, bias, reduction = arch
    rng = np.random.default_rng(seed)
    np_policy = make_policy(
        "numpy",
        obs_dim=obs_dim,
        hidden_sizes=hidden_sizes,
        bias=bias,
        reduction=reduction,
        dtype=dtype,
    )
    weights = {
        k: weight_scale * rng.standard_normal(v.shape) for k, v in np_policy.get_weights().items()
    }
    obs, actions, advantages = random_batch(rng, n, obs_dim, obs_scale)
    advantages[rng.random(n) < dead_fraction] = 0.0
    np_policy.set_weights(weights)
    tf_pol = tf_policy(obs_dim, hidden_sizes, bias, reduction, dtype)
    tf_pol.set_weights(weights)

    assert_backends_agree(np_policy, tf_pol, obs, actions, advantages)


def test_saturated_logits_stay_finite_and_agree():
    """|z| in the hundreds: a naive log(sigmoid(z)) is -inf, and its gradient NaN."""
    rng = np.random.default_rng(0)
    for dtype in ("float64", "float32"):
        np_policy = make_policy("numpy", obs_dim=3, hidden_sizes=(4,), dtype=dtype)
        tf_pol = tf_policy(3, (4,), False, "sum", dtype)
        weights = {k: 50 * rng.standard_normal(v.shape) for k, v in np_policy.get_weights().items()}
        np_policy.set_weights(weights)
        tf_pol.set_weights(weights)
        obs, actions, advantages = random_batch(rng, 64, 3, obs_scale=10)
        h = np.maximum(obs @ weights["W1"], 0)
        z = (h @ weights["W2"])[:, 0]
        assert np.max(np.abs(z)) > 30
        with np.errstate(all="ignore"):
            naive = np.log(1 / (1 + np.exp(-z.astype(dtype))))
        assert not np.all(np.isfinite(naive))  # the trap is real for this batch
        actions = (z < 0).astype(float)  # every action the unlikely one: BCE huge but finite
        for policy in (np_policy, tf_pol):
            stats = policy.gradients(obs, actions, advantages)
            assert all(np.all(np.isfinite(g)) for g in stats.values())
        assert_backends_agree(np_policy, tf_pol, obs, actions, advantages)


def test_sigmoid_is_accurate_everywhere_without_overflow():
    """NumPy's sigmoid against 80-bit long double arithmetic, from exp's underflow (|z| > 745)
    to +-0: full relative precision (a few ulp) also where p is tiny, no overflow warning."""
    from pgrl.nn import sigmoid

    rng = np.random.default_rng(0)
    z = np.concatenate(
        [
            rng.standard_normal(20_000) * 10.0 ** rng.integers(-8, 3, 20_000),
            [0.0, -0.0, 1e-300, -1e-300, 36.0, -36.0, 709.0, -709.0, 745.2, -745.2, 800, -800],
        ]
    )
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # underflow is harmless
        p = sigmoid(z)
    reference = (1 / (1 + np.exp(-z.astype(np.longdouble)))).astype(np.float64)
    normal = reference > np.finfo(np.float64).tiny
    np.testing.assert_allclose(p[normal], reference[normal], rtol=1e-14, atol=0)
    assert np.all(p[~normal] <= np.finfo(np.float64).tiny) and np.all(p >= 0) and np.all(p <= 1)
    np.testing.assert_array_equal([sigmoid(z[i : i + 1])[0] for i in range(50)], p[:50])
    assert sigmoid(z[:1]).shape == (1,) and sigmoid(z[:1]).dtype == np.float64
    assert sigmoid(np.float32([3.0])).dtype == np.float32
    np.testing.assert_allclose(sigmoid(np.array([0.0, 2.0])), [0.5, 1 / (1 + np.exp(-2.0))])


def test_same_seed_same_initial_weights_across_backends_and_dtypes():
    kw = dict(obs_dim=6, hidden_sizes=(5, 3), seed=42, bias=True)
    w_np = make_policy("numpy", **kw).get_weights()
    w_tf = make_policy("tensorflow", **kw).get_weights()
    w_32 = make_policy("numpy", dtype="float32", **kw).get_weights()
    assert list(w_np) == list(w_tf) == ["W1", "b1", "W2", "b2", "W3", "b3"]
    for name in w_np:
        np.testing.assert_array_equal(w_np[name], w_tf[name])
        np.testing.assert_array_equal(w_np[name].astype(np.float32), w_32[name])
    # Karpathy's init: randn / sqrt(fan_in), biases zero
    expected = np.random.default_rng(42).standard_normal((6, 5)) / np.sqrt(6)
    np.testing.assert_array_equal(w_np["W1"], expected)
    assert np.all(w_np["b1"] == 0)
    other = make_policy("numpy", **{**kw, "seed": 43}).get_weights()
    assert not np.array_equal(other["W1"], w_np["W1"])


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_update_stats_agree_and_match_reference(reduction):
    rng = np.random.default_rng(1)
    kw = dict(obs_dim=4, hidden_sizes=(8,), reduction=reduction, seed=5)
    policies = [make_policy(b, **kw) for b in ("numpy", "tensorflow")]
    obs, actions, advantages = random_batch(rng, 30, 4)
    w = policies[0].get_weights()
    loss = reference_loss(w, obs, actions, advantages, reduction, 1, False)
    p = policies[0].action_prob(obs)
    entropy = np.mean(-p * np.log(p) - (1 - p) * np.log(1 - p))
    grads = policies[0].gradients(obs, actions, advantages)
    grad_norm = np.sqrt(sum(np.sum(g**2) for g in grads.values()))
    for policy in policies:
        stats = policy.update(obs, actions, advantages)
        assert stats["loss"] == pytest.approx(loss, rel=1e-12)
        assert stats["grad_norm"] == pytest.approx(grad_norm, rel=1e-12)
        assert stats["mean_prob"] == pytest.approx(p.mean(), rel=1e-12)
        assert stats["entropy"] == pytest.approx(entropy, rel=1e-10)
    # update == gradients + apply_gradients
    manual = make_policy("numpy", **kw)
    manual.apply_gradients(manual.gradients(obs, actions, advantages))
    for policy in policies:
        for name, value in manual.get_weights().items():
            np.testing.assert_allclose(policy.get_weights()[name], value, rtol=1e-12)
        assert policy.get_optimizer_state()["step"] == 1


# ----- TensorFlow stays out of the NumPy path -----


def test_import_pgrl_and_numpy_backend_never_import_tensorflow():
    code = textwrap.dedent(
        """
        import sys
        import numpy as np
        import pgrl
        from pgrl.policies import make_policy, NumpyPolicy
        from pgrl.optim import RMSprop
        from pgrl.returns import discount_rewards, standardize
        p = make_policy("numpy", obs_dim=4, hidden_sizes=(8,))
        x, a = np.ones((3, 4)), np.array([0, 1, 1])
        A = standardize(discount_rewards([0, 0, 1], 0.9))
        p.update(x, a, A)
        p.apply_gradients(p.gradients(x, a, A))
        bad = [m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras")]
        assert not bad, bad
        print("ok")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_missing_tensorflow_gives_install_hint():
    code = textwrap.dedent(
        """
        import sys
        sys.modules["tensorflow"] = None
        sys.modules["keras"] = None
        from pgrl.policies import make_policy
        try:
            make_policy("tensorflow", obs_dim=4)
        except ImportError as e:
            print(e)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "install pgrl[tf]" in out.stdout
    assert len(out.stdout.strip().splitlines()) == 1


# ----- bad input -----


@pytest.fixture(params=["numpy", "tensorflow"])
def policy(request):
    return make_policy(request.param, obs_dim=3, hidden_sizes=(4,), bias=True, seed=1)


def _snapshot(policy):
    return policy.get_weights(), policy.get_optimizer_state()


def _assert_unchanged(policy, snapshot):
    weights, state = snapshot
    for name, w in policy.get_weights().items():
        np.testing.assert_array_equal(w, weights[name])
    for name, v in policy.get_optimizer_state().items():
        np.testing.assert_array_equal(v, state[name])


def _bad_weights(policy):
    w = policy.get_weights()
    missing = {k: v for k, v in w.items() if k != "b2"}
    extra = {**w, "W3": np.zeros((1, 1))}
    misshaped = {**w, "W1": np.zeros((4, 3))}
    nan = {**w, "W2": np.full((4, 1), np.nan)}
    return [
        ("missing", missing, "b2"),
        ("unexpected", extra, "W3"),
        ("shape", misshaped, r"\(4, 3\)"),
        ("NaN", nan, "W2"),
    ]


def test_set_weights_refuses_bad_arrays_and_changes_nothing(policy):
    policy.update(np.ones((2, 3)), [0, 1], [1.0, -1.0])  # non-trivial optimizer state
    snap = _snapshot(policy)
    for _, bad, pattern in _bad_weights(policy):
        # modify a valid entry too: a refused call must not apply it halfway
        bad = {k: (v + 1 if k == "W1" and v.shape == (3, 4) else v) for k, v in bad.items()}
        with pytest.raises(ValueError, match=pattern):
            policy.set_weights(bad)
        with pytest.raises(ValueError, match=pattern):
            policy.apply_gradients(bad)
        _assert_unchanged(policy, snap)


def test_batch_validation(policy):
    snap = _snapshot(policy)
    obs, a, adv = np.ones((2, 3)), np.array([0, 1]), np.array([1.0, 2.0])
    cases = [
        ((np.ones((2, 5)), a, adv), r"obs must have shape \(N, 3\), got \(2, 5\)"),
        ((np.ones(3), a[:1], adv[:1]), r"obs\[None\]"),
        ((obs, np.array([0, 2]), adv), "actions must be 0 or 1, got \\[2\\]"),
        ((obs, np.array([0.5, 1]), adv), "actions must be 0 or 1"),
        ((obs, np.array([0, 1, 1]), adv), r"actions must have shape \(2,\)"),
        ((obs, a, np.array([1.0])), r"advantages must have shape \(2,\)"),
        ((obs, a, np.array([np.nan, 1.0])), "advantages contain NaN"),
        ((np.array([[np.nan, 0, 0], [0, 0, 0]]), a, adv), "obs contains NaN"),
        ((np.ones((0, 3)), a[:0], adv[:0]), "empty batch"),
    ]
    for args, pattern in cases:
        with pytest.raises(ValueError, match=pattern):
            policy.gradients(*args)
        with pytest.raises(ValueError, match=pattern):
            policy.update(*args)
    with pytest.raises(ValueError, match="obs must have shape"):
        policy.action_prob(np.ones((2, 4)))
    _assert_unchanged(policy, snap)


def test_float32_refuses_values_that_overflow():
    policy = make_policy("numpy", obs_dim=2, hidden_sizes=(3,), dtype="float32")
    before = policy.get_weights()
    with pytest.raises(ValueError, match=r"advantages contain NaN or inf \(in float32\)"):
        policy.update(np.ones((2, 2)), [0, 1], [1e300, 1.0])
    with pytest.raises(ValueError, match=r"obs contains NaN or inf \(in float32\)"):
        policy.action_prob(np.full((1, 2), 1e300))
    for name, w in policy.get_weights().items():
        np.testing.assert_array_equal(w, before[name])


def test_optimizer_state_validation(policy):
    snap = _snapshot(policy)
    state = policy.get_optimizer_state()
    with pytest.raises(ValueError, match="'step'"):
        policy.set_optimizer_state({k: v for k, v in state.items() if k != "step"})
    with pytest.raises(ValueError, match="v_W1"):
        policy.set_optimizer_state({**state, "v_W1": np.zeros((9, 9))})
    with pytest.raises(ValueError, match="unexpected entry 'momentum'"):
        policy.set_optimizer_state({**state, "momentum": np.zeros(1)})
    with pytest.raises(ValueError, match="negative"):
        policy.set_optimizer_state({**state, "v_b1": -np.ones(4)})
    _assert_unchanged(policy, snap)


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        (dict(backend="torch"), "backend must be one of .* got 'torch'"),
        (dict(dtype="float16"), "dtype must be one of .* got 'float16'"),
        (dict(reduction="avg"), "reduction must be one of .* got 'avg'"),
        (dict(hidden_sizes=(8, 0)), r"hidden_sizes\[1\] must be a positive integer, got 0"),
        (dict(obs_dim=-1), "obs_dim must be a positive integer, got -1"),
        (dict(optimizer="adam"), "optimizer must be a pgrl.optim.RMSprop"),
    ],
)
def test_constructor_validation(kwargs, pattern):
    args = dict(backend="numpy", obs_dim=4)
    args.update(kwargs)
    with pytest.raises(ValueError, match=pattern):
        make_policy(args.pop("backend"), **args)


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        (dict(learning_rate=0.0), "learning_rate must be > 0"),
        (dict(decay=1.0), r"decay must be in \[0, 1\)"),
        (dict(epsilon=-1e-8), "epsilon must be > 0"),
        (dict(learning_rate="fast"), "learning_rate must be a number"),
    ],
)
def test_rmsprop_validation(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        RMSprop(**kwargs)


THREADS_PROBE = """
import hashlib, sys
import numpy as np
from pgrl.policies import make_policy
rng = np.random.default_rng(0)
obs, a, adv = rng.standard_normal((50, 6400)), rng.random(50) < 0.5, rng.standard_normal(50)
policy = make_policy(sys.argv[1], 6400, hidden_sizes=(200,), seed=0)
numbers = [policy.action_prob(obs), *policy.gradients(obs, a, adv).values()]
print(hashlib.sha256(b"".join(np.ascontiguousarray(x).tobytes() for x in numbers)).hexdigest())
"""


@pytest.mark.parametrize("backend", ["numpy", "tensorflow"])
def test_numbers_do_not_depend_on_the_machines_thread_count(backend):
    """BLAS and TensorFlow split long sums among their threads: with pgrl's one thread per op, a
    Pong-sized forward and backward pass is bit-identical whatever threads the process was given."""
    import os
    import subprocess
    import sys

    digests = set()
    for n in ("1", "2"):
        env = os.environ | {
            k: n for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "TF_NUM_INTRAOP_THREADS")
        }
        done = subprocess.run(
            [sys.executable, "-c", THREADS_PROBE, backend], env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr[-2000:]
        digests.add(done.stdout.split()[-1])
    assert len(digests) == 1
