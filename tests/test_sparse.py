"""SparseRows (Pong's frame differences) against dense NumPy, and the policies' sparse paths."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pgrl.policies import make_policy
from pgrl.sparse import SparseRows


def frame_differences(rng, n, width, nnz_per_row):
    x = np.zeros((n, width), np.int8)
    for t in range(n):
        k = int(rng.integers(0, nnz_per_row + 1))
        x[t, rng.choice(width, k, replace=False)] = rng.choice([-1, 1], k)
    return x


@settings(max_examples=50, deadline=None)
@given(
    n=st.integers(0, 60),
    width=st.integers(1, 40),
    nnz=st.integers(0, 5),
    seed=st.integers(0, 2**32 - 1),
)
def test_sparse_matches_dense(n, width, nnz, seed):
    rng = np.random.default_rng(seed)
    x = frame_differences(rng, n, width, min(nnz, width))
    w = rng.standard_normal((width, 3))
    dh = rng.standard_normal((n, 3))
    s = SparseRows.from_dense(x)
    np.testing.assert_allclose(s.matmul(w), x @ w, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(s.rmatmul(dh), x.T @ dh, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(s.toarray(), x)
    assert s.shape == x.shape and s.nnz == np.count_nonzero(x)
    if n >= 3:
        np.testing.assert_array_equal(s[1 : n - 1].toarray(), x[1 : n - 1])
        both = SparseRows.concatenate([s[:2], s[2:]])
        np.testing.assert_array_equal(both.toarray(), x)


def test_sparse_validation():
    with pytest.raises(ValueError, match="indptr"):
        SparseRows(np.array([0, 2]), np.array([0], np.int32), np.array([1], np.int8), 4)
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        SparseRows(np.array([0, 1]), np.array([4], np.int32), np.array([1], np.int8), 4)
    with pytest.raises(TypeError, match="contiguous"):
        SparseRows.from_dense(np.eye(3))[::2]


@pytest.mark.parametrize("backend", ["numpy", "tensorflow"])
def test_policy_sparse_int8_and_dense_paths_agree(backend):
    rng = np.random.default_rng(0)
    x = frame_differences(rng, 200, 256, 6)
    actions = (rng.random(200) < 0.5).astype(float)
    advantages = rng.standard_normal(200)
    policy = make_policy(backend, obs_dim=256, hidden_sizes=(32,), bias=True, seed=1)
    dense = x.astype(np.float64)
    g_dense = policy.gradients(dense, actions, advantages)
    p_dense = policy.action_prob(dense)
    for obs in (x, SparseRows.from_dense(x)):  # int8 and CSR
        np.testing.assert_allclose(policy.action_prob(obs), p_dense, rtol=1e-12)
        for name, g in policy.gradients(obs, actions, advantages).items():
            np.testing.assert_allclose(g, g_dense[name], rtol=1e-10, atol=1e-12)
    # a few int8 rows (one per env during a rollout) take the row-by-row gather
    few = x[:3]
    np.testing.assert_allclose(policy.action_prob(few), p_dense[:3], rtol=1e-12)
    # one int8 row at a time (a rollout on one env), the all-zero row included
    for row in (*x[:10], np.zeros(256, np.int8)):
        expected = policy.action_prob(row[None].astype(np.float64))
        np.testing.assert_allclose(policy.action_prob(row[None]), expected, rtol=1e-12)
    g_few = policy.gradients(few, actions[:3], advantages[:3])
    g_ref = policy.gradients(dense[:3], actions[:3], advantages[:3])
    for name, g in g_few.items():
        np.testing.assert_allclose(g, g_ref[name], rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match=r"shape \(N, 256\)"):
        policy.action_prob(SparseRows.from_dense(x[:, :100]))


def test_sparse_parity_between_backends():
    rng = np.random.default_rng(1)
    x = SparseRows.from_dense(frame_differences(rng, 300, 6400, 40))
    actions = (rng.random(300) < 0.5).astype(float)
    advantages = rng.standard_normal(300)
    kw = dict(obs_dim=6400, hidden_sizes=(200,), seed=3)
    np_policy, tf_policy = make_policy("numpy", **kw), make_policy("tensorflow", **kw)
    np.testing.assert_allclose(np_policy.action_prob(x), tf_policy.action_prob(x), rtol=1e-12)
    rows = x[:20].toarray()
    for t in range(20):  # one int8 row per call, as in a one-env rollout
        one = rows[t : t + 1]
        np.testing.assert_allclose(
            np_policy.action_prob(one), tf_policy.action_prob(one), rtol=1e-12
        )
    g_np = np_policy.gradients(x, actions, advantages)
    g_tf = tf_policy.gradients(x, actions, advantages)
    for name in g_np:
        scale = np.abs(g_np[name]).max()
        assert np.abs(g_np[name] - g_tf[name]).max() <= 1e-10 * scale


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("arch", [((200,), False), ((32, 16), True), ((), True)])
def test_action_prob_agrees_across_backends_on_rollout_inputs(dtype, arch):
    """The inputs a rollout step gives (1, 2 and 5 int8 frame differences, an all-zero one
    included, hundreds of nonzeros, dense int rows, float32 CartPole-like rows, bools, an empty
    batch): TF's eager forward pass, NumPy's, and the Keras model's own call agree."""
    hidden_sizes, bias = arch
    rng = np.random.default_rng(7)
    tol = {"float64": 1e-12, "float32": 1e-5}[dtype]  # float32: the README's parity bound
    frames = frame_differences(rng, 12, 6400, 30)
    frames[3] = 0
    busy = frame_differences(rng, 3, 6400, 400)  # hundreds of nonzeros: still sparse
    dense = rng.integers(-1, 2, size=(4, 6400)).astype(np.int8)  # dense int: the dense path
    cases = {
        6400: [frames[:1], frames[2:4], frames[3:8], frames, frames[::3], busy, dense],
        4: [
            *(rng.standard_normal((n, 4)).astype(np.float32) * 3 for n in (1, 2, 5, 12)),
            rng.integers(0, 4, size=(3, 4)).astype(np.uint8),
            rng.random((3, 4)) < 0.5,
            np.zeros((0, 4), np.float32),
        ],
    }
    for obs_dim, batches in cases.items():
        kw = dict(obs_dim=obs_dim, hidden_sizes=hidden_sizes, bias=bias, dtype=dtype, seed=2)
        np_policy, tf_policy = make_policy("numpy", **kw), make_policy("tensorflow", **kw)
        # trained-looking weights: nonzero biases, some dead units
        weights = {
            k: w + 0.3 * rng.standard_normal(w.shape) for k, w in np_policy.get_weights().items()
        }
        np_policy.set_weights(weights)
        tf_policy.set_weights(weights)
        for obs in batches:
            expected = np_policy.action_prob(obs)
            p_tf = tf_policy.action_prob(obs)
            assert p_tf.dtype == expected.dtype == np.dtype(dtype) and p_tf.shape == (len(obs),)
            # atol: TF flushes float32 denormals (a saturated p of 5e-42 becomes 0)
            np.testing.assert_allclose(p_tf, expected, rtol=tol, atol=tol / 1e3)
            z = np_policy.logits(obs)
            # a logit sums thousands of terms that cancel: in float32 its error scales with the
            # batch's largest logit, not with each one (a logit of 2 can carry 3e-5 from a 6400-wide
            # dense row whose terms sum to 30 elsewhere in the batch)
            atol = tol * max(1.0, float(np.abs(z).max(initial=0.0)))
            np.testing.assert_allclose(tf_policy.logits(obs), z, rtol=tol, atol=atol)
            if len(obs):
                keras_z = tf_policy.model(obs.astype(dtype)).numpy()[:, 0]
                np.testing.assert_allclose(keras_z, z, rtol=tol, atol=atol)


@pytest.mark.parametrize("change", ["update", "apply_gradients", "set_weights"])
def test_tf_action_prob_follows_every_weight_change(change):
    """TF's eager forward pass reads a copy of the weights: every way of changing them must
    show in the next action_prob, exactly as in a freshly loaded policy."""
    rng = np.random.default_rng(3)
    x = frame_differences(rng, 4, 6400, 25)
    actions, advantages = np.array([1, 0, 1, 1.0]), np.array([5.0, -3.0, 2.0, 4.0])
    policy = make_policy("tensorflow", obs_dim=6400, hidden_sizes=(16,), seed=0)
    before = policy.action_prob(x)
    if change == "update":
        policy.update(x, actions, advantages)
    elif change == "apply_gradients":
        policy.apply_gradients(policy.gradients(x, actions, advantages))
    else:
        policy.set_weights({k: 2 * w for k, w in policy.get_weights().items()})
    after = policy.action_prob(x)
    assert np.abs(after - before).max() > 1e-3
    fresh = make_policy("tensorflow", obs_dim=6400, hidden_sizes=(16,), seed=0)
    fresh.set_weights(policy.get_weights())
    np.testing.assert_array_equal(after, fresh.action_prob(x))
