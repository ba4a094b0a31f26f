"""pgrl.rollout: episode boundaries, determinism, a = u < p, bad input, compact storage."""

from __future__ import annotations

import tracemalloc
from functools import partial

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces
from gymnasium.vector import AsyncVectorEnv, AutoresetMode, SyncVectorEnv
from gymnasium.wrappers import RecordEpisodeStatistics

from pgrl.distributions import Bernoulli
from pgrl.envs import make_env
from pgrl.policies import make_policy
from pgrl.rollout import (
    CHUNK_ROWS,
    SEED_BOUND,
    EpisodeBatch,
    collect_episodes,
    make_vector_env,
    slot_generators,
)
from pgrl.sparse import SparseRows, random_frame_differences

DISABLED = AutoresetMode.DISABLED


def _sub_env(env_id, seed, stats, kwargs):
    env = make_env(env_id, seed=seed, **kwargs)
    return RecordEpisodeStatistics(env, buffer_length=1000) if stats else env


def vector_env(env_id, num_envs, asynchronous, stats=False, **kwargs):
    """make_vector_env's envs, sync or async at will, optionally with RecordEpisodeStatistics."""
    fns = [partial(_sub_env, env_id, i, stats, kwargs) for i in range(num_envs)]
    cls = AsyncVectorEnv if asynchronous else SyncVectorEnv
    return cls(fns, copy=False, autoreset_mode=DISABLED)


class ConstantPolicy:
    """Gives every observation the same P(action = 1)."""

    distribution = Bernoulli()

    def __init__(self, obs_dim, p):
        self.obs_dim, self.p = obs_dim, p

    def action_prob(self, obs):
        return np.full(len(obs), self.p)

    def sample(self, obs, u):
        return self.distribution.sample(self.action_prob(obs), u)


class CountingEnv(gym.Env):
    """obs = (step in episode, episodes begun since the last seeded reset, seed % 1000), reward =
    step + 1; episode lengths drawn from the seeded np_random, some longer than a chunk."""

    observation_space = spaces.Box(-np.inf, np.inf, (3,), np.float32)
    action_space = spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        if seed is not None:
            self.seed_tag, self.episode = seed % 1000, -1
        self.episode += 1
        self.t = 0
        self.length = int(self.np_random.integers(1, 2.5 * CHUNK_ROWS))
        return self._obs(), {}

    def step(self, action):
        self.t += 1
        return self._obs(), float(self.t), self.t == self.length, False, {}

    def _obs(self):
        return np.array([self.t, self.episode, self.seed_tag], dtype=np.float32)


class SparseFrameEnv(gym.Env):
    """Pong-shaped observations: (6400,) int8 frames with 50 entries of +-1; frame t of an
    episode is ``frames[t % 64]``; episodes of ``length`` steps."""

    observation_space = spaces.Box(-1, 1, (6400,), np.int8)
    action_space = spaces.Discrete(2)

    def __init__(self, length):
        rng = np.random.default_rng(0)
        self.frames = random_frame_differences(rng, 64, 6400, nonzeros=50)
        self.length = length

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self.frames[0], {}

    def step(self, action):
        self.t += 1
        return self.frames[self.t % 64], 0.0, self.t == self.length, False, {}


def dense(obs):
    return obs.toarray() if isinstance(obs, SparseRows) else np.asarray(obs)


def assert_consistent(batch: EpisodeBatch, n_episodes: int):
    """Shapes, dtypes and per-episode summaries agree with the per-step arrays."""
    assert batch.n_episodes == n_episodes
    assert batch.steps == batch.ep_lengths.sum() == len(batch.obs) == batch.actions.size
    assert batch.rewards.shape == (batch.steps,)
    assert batch.env_steps >= batch.steps
    assert batch.actions.dtype == np.int8 and set(np.unique(batch.actions)) <= {0, 1}
    assert batch.ep_bounds.dtype == np.int64 and batch.ep_bounds[0] == 0
    np.testing.assert_array_equal(np.diff(batch.ep_bounds), batch.ep_lengths)
    assert np.all(batch.ep_lengths >= 1)
    sums = [r.sum() for r in batch.episode_rewards()]
    np.testing.assert_allclose(batch.ep_returns, sums, rtol=1e-12)


def assert_same(a: EpisodeBatch, b: EpisodeBatch, env_steps: bool = True):
    """Identical episodes; ``env_steps`` too unless one batch idled in process, the other not."""
    np.testing.assert_array_equal(dense(a.obs), dense(b.obs))
    for name in ("actions", "rewards", "ep_bounds", "ep_returns", "ep_lengths", "ep_env"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert a.steps == b.steps
    if env_steps:
        assert a.env_steps == b.env_steps


def replay(batch: EpisodeBatch, env_id, num_envs, rng_seed, **kwargs):
    """Replay every slot's recorded episodes on a fresh env from the documented draws of its
    generator (the env's seed at the slot's first episode, then one uniform per step; later
    episodes reset without a seed): each recorded row must be the obs
    the action was taken on, each reward the one it got, and each episode must end exactly at
    its last recorded step. So no reset step is recorded and every episode is complete."""
    rngs = slot_generators(rng_seed, num_envs)
    for i in range(num_envs):
        env = make_env(env_id, **kwargs)
        for n, k in enumerate(np.flatnonzero(batch.ep_env == i)):
            seed = int(rngs[i].integers(SEED_BOUND)) if n == 0 else None
            obs, _ = env.reset(seed=seed)
            ep_obs, actions, rewards = batch.episode(k)
            ep_obs = dense(ep_obs)
            rngs[i].random(len(actions))  # the episode's uniforms
            for t, a in enumerate(actions):
                np.testing.assert_array_equal(ep_obs[t], obs, err_msg=f"env {i} episode {n} t {t}")
                obs, r, terminated, truncated, _ = env.step(int(a))
                assert r == rewards[t]
                assert (terminated or truncated) == (t == len(actions) - 1)
            assert batch.ep_truncated[k] == (truncated and not terminated)
            np.testing.assert_array_equal(batch.last_obs[k], obs)
        env.close()


# ----- vector env construction -----


def test_make_vector_env_sync_or_async():
    one = make_vector_env("CartPole-v1", 1, seed=0)
    two = make_vector_env("CartPole-v1", 2, seed=0, vectorization="async")
    cheap = make_vector_env("CartPole-v1", 3, seed=0)  # "sync", the default
    try:
        assert isinstance(one, SyncVectorEnv) and isinstance(two, AsyncVectorEnv)
        assert isinstance(cheap, SyncVectorEnv) and cheap.num_envs == 3
        for envs in (one, two, cheap):
            assert envs.metadata["autoreset_mode"] == DISABLED
            assert envs.single_action_space == spaces.Discrete(2)
            assert envs.single_observation_space.shape == (4,)
    finally:
        one.close()
        two.close()
        cheap.close()
    with pytest.raises(ValueError, match="vectorization must be one of"):
        make_vector_env("CartPole-v1", 2, vectorization="threads")


# ----- episode boundaries -----


SETTINGS = [(1, False), (4, False), (4, True)]  # (num_envs, asynchronous)


@pytest.mark.parametrize(("num_envs", "asynchronous"), SETTINGS)
def test_cartpole_episodes_complete_and_match_record_episode_statistics(num_envs, asynchronous):
    envs = vector_env("CartPole-v1", num_envs, asynchronous, stats=True)
    try:
        policy = make_policy("numpy", 4, hidden_sizes=(8,), seed=1)
        batch = collect_episodes(envs, policy, slot_generators(7, envs.num_envs), 9)
        assert_consistent(batch, 9)
        assert batch.obs.dtype == np.float32 and batch.obs.shape == (batch.steps, 4)
        # Each sub-env's statistics start with its recorded episodes, in order; an idle env may
        # have finished more, unrecorded, episodes after them.
        returns, lengths = envs.get_attr("return_queue"), envs.get_attr("length_queue")
        for i in range(num_envs):
            mine = np.flatnonzero(batch.ep_env == i)
            assert list(lengths[i])[: mine.size] == batch.ep_lengths[mine].tolist()
            assert list(returns[i])[: mine.size] == batch.ep_returns[mine].tolist()
        # in process, envs without an episode to play wait; worker processes step them all
        assert batch.env_steps == batch.steps if not asynchronous else batch.env_steps > 0
        assert set(batch.ep_env.tolist()) == set(range(num_envs))
    finally:
        envs.close()
    replay(batch, "CartPole-v1", num_envs, 7)


@pytest.mark.parametrize(("num_envs", "asynchronous"), SETTINGS)
def test_time_limit_truncation_is_told_from_termination(num_envs, asynchronous):
    envs = vector_env("CartPole-v1", num_envs, asynchronous, max_episode_steps=25)
    try:
        policy = make_policy("numpy", 4, hidden_sizes=(8,), seed=1)
        batch = collect_episodes(envs, policy, slot_generators(5, envs.num_envs), 16)
    finally:
        envs.close()
    assert batch.ep_truncated.dtype == bool and batch.last_obs.shape == (16, 4)
    # shorter than 25 steps: the pole fell (terminated); cut at 25: truncated, unless the pole
    # fell on that very step (the replay checks each flag against the env's own)
    assert np.all(batch.ep_lengths[batch.ep_truncated] == 25)
    assert 0 < batch.ep_truncated.sum() < 16
    replay(batch, "CartPole-v1", num_envs, 5, max_episode_steps=25)


@pytest.mark.parametrize(("num_envs", "asynchronous"), [(1, False), (2, False), (2, True)])
def test_pong_episodes_complete_sparse_and_start_at_reset(num_envs, asynchronous):
    kwargs = {"max_episode_steps": 40}
    envs = vector_env("ALE/Pong-v5", num_envs, asynchronous, stats=True, **kwargs)
    try:
        policy = make_policy("numpy", 6400, seed=0)
        batch = collect_episodes(envs, policy, slot_generators(3, envs.num_envs), 3)
        assert_consistent(batch, 3)
        assert np.all(batch.ep_lengths == 40)
        lengths = envs.get_attr("length_queue")
        for i in range(num_envs):
            assert list(lengths[i])[: np.sum(batch.ep_env == i)] == [40] * np.sum(batch.ep_env == i)
    finally:
        envs.close()
    assert isinstance(batch.obs, SparseRows) and batch.obs.values.dtype == np.int8
    assert batch.obs.shape == (batch.steps, 6400)
    # FrameDifference gives zeros on an episode's first step: every episode starts at a reset.
    for k in range(batch.n_episodes):
        assert batch.episode(k)[0][:1].nnz == 0
    assert batch.obs.nnz > 0
    replay(batch, "ALE/Pong-v5", num_envs, 3, **kwargs)


@pytest.mark.parametrize(("num_envs", "asynchronous"), [(1, False), (3, False), (3, True)])
def test_long_episodes_cross_chunks_in_order(num_envs, asynchronous):
    cls = AsyncVectorEnv if asynchronous else SyncVectorEnv
    envs = cls([CountingEnv] * num_envs, copy=False, autoreset_mode=DISABLED)
    try:
        batch = collect_episodes(envs, ConstantPolicy(3, 0.5), slot_generators(0, envs.num_envs), 7)
    finally:
        envs.close()
    assert_consistent(batch, 7)
    assert batch.ep_lengths.max() > CHUNK_ROWS
    # Episode i of the batch was played by slot i % 3 (round by round).
    assert batch.ep_env.tolist() == [i % num_envs for i in range(7)]
    seed_tags = {}
    for k in range(batch.n_episodes):
        obs, _, rewards = batch.episode(k)
        np.testing.assert_array_equal(obs[:, 0], np.arange(len(obs)))  # from reset to the end
        np.testing.assert_array_equal(rewards, np.arange(1, len(obs) + 1))
        assert len(np.unique(obs[:, 1:], axis=0)) == 1
        # a slot's first episode of the batch starts at a seeded reset, its next ones follow it
        assert int(obs[0, 1]) == k // num_envs
        seed_tags.setdefault(k % num_envs, set()).add(obs[0, 2])
    # one seed per slot, each its own
    assert all(len(tags) == 1 for tags in seed_tags.values())
    assert len(set().union(*seed_tags.values())) == num_envs


@pytest.mark.parametrize("asynchronous", [False, True])
def test_fewer_episodes_than_envs_starts_only_those_needed(asynchronous):
    envs = vector_env("CartPole-v1", 4, asynchronous)
    try:
        batch = collect_episodes(envs, ConstantPolicy(4, 0.5), slot_generators(0, envs.num_envs), 2)
    finally:
        envs.close()
    assert_consistent(batch, 2)
    assert sorted(batch.ep_env.tolist()) == [0, 1]
    if not asynchronous:
        assert batch.env_steps == batch.steps


# ----- determinism -----


def two_batches(envs, backend="numpy"):
    policy = make_policy(backend, 4, hidden_sizes=(16,), bias=True, seed=2)
    rngs = slot_generators(11, envs.num_envs)
    return [collect_episodes(envs, policy, rngs, 6) for _ in range(2)]


def test_same_seed_same_batches_and_sync_equals_async():
    runs = []
    for asynchronous in (True, True, False, False):
        envs = vector_env("CartPole-v1", 3, asynchronous=asynchronous)
        try:
            runs.append(two_batches(envs))
        finally:
            envs.close()
    for k, run in enumerate(runs[1:], start=1):
        for a, b in zip(runs[0], run, strict=True):
            # worker processes step idle envs too, in process they wait: only env_steps differs
            assert_same(a, b, env_steps=k == 1)
    for a, b in zip(runs[2], runs[3], strict=True):
        assert_same(a, b)


def test_one_env_fast_path_equals_vector_path_and_the_documented_loop():
    sync = make_vector_env("CartPole-v1", 1, seed=0)
    asyn = AsyncVectorEnv([partial(make_env, "CartPole-v1")], copy=False, autoreset_mode=DISABLED)
    try:
        fast, vector = two_batches(sync), two_batches(asyn)
    finally:
        sync.close()
        asyn.close()
    for a, b in zip(fast, vector, strict=True):
        assert_same(a, b)

    # The hand-written loop of the module docstring, batch after batch.
    policy = make_policy("numpy", 4, hidden_sizes=(16,), bias=True, seed=2)
    rng = slot_generators(11, 1)[0]
    env = make_env("CartPole-v1")
    for batch in fast:
        obs_rows, actions, rewards, lengths = [], [], [], []
        obs, _ = env.reset(seed=int(rng.integers(SEED_BOUND)))
        for k in range(6):
            if k:
                obs, _ = env.reset()
            done, length = False, 0
            while not done:
                a = int(rng.random() < policy.action_prob(obs[None])[0])
                obs_rows.append(obs)
                obs, r, terminated, truncated, _ = env.step(a)
                actions.append(a)
                rewards.append(r)
                done, length = terminated or truncated, length + 1
            lengths.append(length)
        np.testing.assert_array_equal(batch.obs, np.array(obs_rows))
        np.testing.assert_array_equal(batch.actions, actions)
        np.testing.assert_array_equal(batch.rewards, rewards)
        np.testing.assert_array_equal(batch.ep_lengths, lengths)


def test_tensorflow_policy_draws_the_same_episodes_as_numpy():
    envs = make_vector_env("CartPole-v1", 1, seed=0)
    try:
        np_batches, tf_batches = two_batches(envs), two_batches(envs, "tensorflow")
    finally:
        envs.close()
    for a, b in zip(np_batches, tf_batches, strict=True):
        assert_same(a, b)


# ----- actions: a = u < p from the one generator -----


@pytest.mark.parametrize(("num_envs", "asynchronous"), SETTINGS)
@pytest.mark.parametrize("p", [0.0, 1.0])
def test_certain_policies_give_constant_actions(num_envs, asynchronous, p):
    envs = vector_env("CartPole-v1", num_envs, asynchronous)
    try:
        batch = collect_episodes(envs, ConstantPolicy(4, p), slot_generators(0, envs.num_envs), 3)
    finally:
        envs.close()
    assert np.all(batch.actions == int(p))


def test_actions_are_u_less_than_p_from_the_generator():
    envs = make_vector_env("CartPole-v1", 1, seed=0)
    try:
        batch = collect_episodes(envs, ConstantPolicy(4, 0.3), slot_generators(5, envs.num_envs), 4)
    finally:
        envs.close()
    rng = slot_generators(5, 1)[0]
    expected = []
    rng.integers(SEED_BOUND)  # the env's seed comes first
    for length in batch.ep_lengths:
        expected.extend(rng.random(length) < 0.3)
    np.testing.assert_array_equal(batch.actions, expected)


# ----- storage -----


def test_pong_sized_batch_is_compact_and_exact():
    length = 2 * CHUNK_ROWS + 300
    envs = SyncVectorEnv([partial(SparseFrameEnv, length)], copy=False, autoreset_mode=DISABLED)
    tracemalloc.start()
    try:
        batch = collect_episodes(
            envs, ConstantPolicy(6400, 0.5), slot_generators(0, envs.num_envs), 10
        )
        _, peak = tracemalloc.get_traced_memory()
        print(f"peak traced {peak / 2**20:.1f} MiB, batch {batch.nbytes / 2**20:.1f} MiB")
    finally:
        tracemalloc.stop()
        envs.close()
    assert_consistent(batch, 10)
    # int8 rows would take 6400 B per step, float64 ones 51200; CSR with 50 nonzeros ~270.
    assert batch.nbytes / batch.steps < 300
    assert peak < 16 * 2**20 + 2 * batch.nbytes  # chunks (6.5 MB) + batch, not dense frames
    expected = SparseFrameEnv(length).frames[np.arange(length) % 64]
    for k in range(batch.n_episodes):
        np.testing.assert_array_equal(batch.episode(k)[0].toarray(), expected)


def test_split_and_progress():
    calls = []
    envs = make_vector_env("CartPole-v1", 1, seed=0)
    try:
        batch = collect_episodes(
            envs,
            ConstantPolicy(4, 0.5),
            slot_generators(0, 1),
            4,
            progress=lambda k, steps: calls.append((k, steps)),
        )
    finally:
        envs.close()
    assert calls == [(k + 1, int(batch.ep_bounds[k + 1])) for k in range(4)]
    parts = batch.split(np.arange(batch.steps))
    assert [p.size for p in parts] == batch.ep_lengths.tolist()
    assert np.concatenate(parts).tolist() == list(range(batch.steps))
    with pytest.raises(ValueError, match="one per recorded step"):
        batch.split(np.arange(batch.steps + 1))


# ----- bad input -----


@pytest.fixture(scope="module")
def cartpole_envs():
    envs = make_vector_env("CartPole-v1", 1, seed=0)
    yield envs
    envs.close()


@pytest.mark.parametrize("n", [0, -3, 2.5, True, "4", None])
def test_bad_n_episodes(cartpole_envs, n):
    with pytest.raises(ValueError, match="n_episodes must be a positive integer"):
        collect_episodes(
            cartpole_envs, ConstantPolicy(4, 0.5), slot_generators(0, cartpole_envs.num_envs), n
        )


@pytest.mark.parametrize("num_envs", [0, -1, 1.5, False])
def test_bad_num_envs(num_envs):
    with pytest.raises(ValueError, match="num_envs must be a positive integer"):
        make_vector_env("CartPole-v1", num_envs)


def test_unknown_env_id_and_bad_seed():
    with pytest.raises(ValueError, match="unknown env id 'Pong-v0'"):
        make_vector_env("Pong-v0", 1)
    with pytest.raises(ValueError, match="unknown env id 'Pong-v0'"):
        make_vector_env("Pong-v0", 2)
    with pytest.raises(ValueError, match="seed must be an integer"):
        make_vector_env("CartPole-v1", 1, seed=1.5)


def test_non_binary_env():
    envs = SyncVectorEnv([lambda: gym.make("Acrobot-v1")], autoreset_mode=DISABLED)
    try:
        with pytest.raises(ValueError, match=r"Discrete\(2\) actions.*Discrete\(3\)"):
            collect_episodes(envs, ConstantPolicy(6, 0.5), slot_generators(0, envs.num_envs), 1)
    finally:
        envs.close()


def test_obs_width_not_the_policys(cartpole_envs):
    policy = make_policy("numpy", 6400)
    with pytest.raises(ValueError, match="width 4 but the policy takes obs_dim=6400"):
        collect_episodes(cartpole_envs, policy, slot_generators(0, cartpole_envs.num_envs), 1)


def test_autoreset_env_is_refused():
    envs = SyncVectorEnv([partial(make_env, "CartPole-v1")])  # gymnasium's NEXT_STEP default
    try:
        with pytest.raises(ValueError, match="autoreset_mode=DISABLED"):
            collect_episodes(envs, ConstantPolicy(4, 0.5), slot_generators(0, envs.num_envs), 1)
    finally:
        envs.close()


@pytest.mark.parametrize(
    "rngs",
    [0, np.random.default_rng(0), [np.random.RandomState(0)], slot_generators(0, 2)],
)
def test_rngs_must_be_one_generator_per_env(cartpole_envs, rngs):
    with pytest.raises(ValueError, match="rngs must be a list of 1 numpy.random.Generator"):
        collect_episodes(cartpole_envs, ConstantPolicy(4, 0.5), rngs, 1)


def test_slot_streams_do_not_depend_on_the_number_of_slots():
    a, b = slot_generators(3, 2), slot_generators(3, 8)
    for g, h in zip(a, b[:2], strict=True):
        assert g.random() == h.random()
    assert slot_generators(3, 2)[0].random() != slot_generators(3, 2)[1].random()


def test_single_env_and_non_policy_are_refused(cartpole_envs):
    env = make_env("CartPole-v1")
    with pytest.raises(ValueError, match="vector env"):
        collect_episodes(env, ConstantPolicy(4, 0.5), slot_generators(0, 1), 1)
    with pytest.raises(ValueError, match="pgrl policy"):
        collect_episodes(cartpole_envs, object(), slot_generators(0, cartpole_envs.num_envs), 1)
    with pytest.raises(ValueError, match="progress"):
        collect_episodes(
            cartpole_envs,
            ConstantPolicy(4, 0.5),
            slot_generators(0, cartpole_envs.num_envs),
            1,
            progress=3,
        )


class HugeObsEnv(gym.Env):
    """float64 observations beyond float32's range: a float32 policy must see them cast."""

    observation_space = spaces.Box(-np.inf, np.inf, (4,), np.float64)
    action_space = spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.full(4, 1e300), {}

    def step(self, action):
        return np.full(4, 1e300), 0.0, True, False, {}


def test_observations_wider_than_the_policy_go_through_the_checked_action_prob():
    """float64 observations for a float32 policy are cast by action_prob, which refuses what
    overflows."""
    envs = SyncVectorEnv([HugeObsEnv], copy=False, autoreset_mode=DISABLED)
    policy = make_policy("numpy", 4, hidden_sizes=(3,), dtype="float32")
    with pytest.raises(ValueError, match="NaN or inf \\(in float32\\)"):
        collect_episodes(envs, policy, slot_generators(0, envs.num_envs), 1)
    envs.close()


def test_one_policy_call_per_vector_step_for_the_playing_envs():
    """A vector step asks the policy once, for exactly the envs playing an episode of the batch
    (idle envs are not evaluated): rows asked for == steps recorded."""
    calls, rows = [], []

    class Counting(type(make_policy("numpy", 4))):
        def sample(self, obs, u):
            calls.append(1)
            rows.append(len(obs))
            return super().sample(obs, u)

    for vectorization in ("sync", "async"):
        calls.clear(), rows.clear()
        envs = make_vector_env("CartPole-v1", 3, seed=0, vectorization=vectorization)
        policy = Counting(4, hidden_sizes=(8,), seed=0)
        batch = collect_episodes(envs, policy, slot_generators(0, envs.num_envs), 4)
        envs.close()
        assert sum(rows) == batch.steps
        # the longest-running env plays every vector step, so there are as many as it has steps
        assert len(calls) == max(
            sum(batch.ep_lengths[batch.ep_env == i]) for i in np.unique(batch.ep_env)
        )
