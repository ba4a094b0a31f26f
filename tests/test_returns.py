import numpy as np
import pytest

from pgrl.returns import batch_returns, discount_rewards, standardize


def test_discount_rewards_by_hand():
    # G_2 = 1, G_1 = 0 + 0.5 * 1 = 0.5, G_0 = 2 + 0.5 * 0.5 = 2.25
    np.testing.assert_allclose(discount_rewards([2.0, 0.0, 1.0], 0.5), [2.25, 0.5, 1.0])


def test_discount_rewards_gamma_one_is_reverse_cumsum():
    r = np.array([1.0, -2.0, 3.0, 0.5])
    np.testing.assert_allclose(discount_rewards(r, 1.0), np.cumsum(r[::-1])[::-1])


def test_discount_rewards_pong_reset():
    # Two points: lost at t=2, won at t=5. With the reset the first point's returns
    # see only its own -1; without it the +1 of the second point leaks back.
    r = [0, 0, -1, 0, 0, 1]
    g = 0.9
    np.testing.assert_allclose(
        discount_rewards(r, g, reset_on_nonzero=True),
        [-(g**2), -g, -1, g**2, g, 1],
    )
    np.testing.assert_allclose(
        discount_rewards(r, g),
        [-(g**2) + g**5, -g + g**4, -1 + g**3, g**2, g, 1],
    )


def test_discount_rewards_empty_and_bad_input():
    assert discount_rewards([], 0.99).shape == (0,)
    with pytest.raises(ValueError, match="gamma"):
        discount_rewards([1.0], 1.5)
    with pytest.raises(ValueError, match="1-D"):
        discount_rewards([[1.0]], 0.9)
    with pytest.raises(ValueError, match="finite"):
        discount_rewards([np.nan], 0.9)


def test_standardize():
    x = np.array([1.0, 2.0, 3.0, 4.0])
    s = standardize(x)
    np.testing.assert_allclose(s, (x - 2.5) / np.sqrt(1.25))
    assert abs(s.mean()) < 1e-15 and abs(s.std() - 1) < 1e-15


@pytest.mark.parametrize("x", [[0.1, 0.1, 0.1], [0.0] * 5, [-3.0], []])
def test_standardize_constant_gives_zeros_not_nan(x):
    s = standardize(x)
    assert s.shape == (len(x),)
    assert np.all(s == 0)


def test_bootstrap_continues_a_truncated_episode():
    # G_2 = 3 + 0.9 * 10, G_1 = 2 + 0.9 * G_2, G_0 = 1 + 0.9 * G_1
    np.testing.assert_allclose(discount_rewards([1, 2, 3], 0.9, bootstrap=10), [12.52, 12.8, 12.0])
    # a point that ends on the last step takes nothing from after it
    np.testing.assert_allclose(discount_rewards([0, 1], 0.5, True, bootstrap=8), [0.5, 1.0])
    np.testing.assert_allclose(discount_rewards([0, 0], 0.5, True, bootstrap=8), [2.0, 4.0])
    with pytest.raises(ValueError, match="bootstrap must be finite"):
        discount_rewards([1.0], 0.9, bootstrap=np.nan)


def test_batch_returns_bootstrap_per_episode():
    rewards, bounds = np.array([1.0, 1.0, 1.0, 1.0, 1.0]), np.array([0, 2, 5])
    got = batch_returns(rewards, bounds, 0.5, False, np.array([0.0, 4.0]))
    np.testing.assert_allclose(got, [1.5, 1.0, 2.25, 2.5, 3.0])
    np.testing.assert_array_equal(
        batch_returns(rewards, bounds, 0.5, False),
        batch_returns(rewards, bounds, 0.5, False, np.zeros(2)),
    )
    with pytest.raises(ValueError, match=r"bootstrap must have shape \(2,\)"):
        batch_returns(rewards, bounds, 0.5, False, np.zeros(3))
