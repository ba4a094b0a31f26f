"""pgrl.vector: WorkerVectorEnv steps exactly like SyncVectorEnv, fails loudly, never hangs."""

from __future__ import annotations

import os
import signal
from functools import partial

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, SyncVectorEnv

from pgrl.envs import make_env
from pgrl.policies import make_policy
from pgrl.rollout import collect_episodes, make_vector_env, slot_generators
from pgrl.vector import WorkerVectorEnv

DISABLED = AutoresetMode.DISABLED


class FailingEnv(gym.Env):
    """Zeros forever; ``step(1)`` raises, ``step(2)`` kills the process without a word."""

    observation_space = spaces.Box(-1, 1, (2,), np.float32)
    action_space = spaces.Discrete(3)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(2, np.float32), {}

    def step(self, action):
        if action == 1:
            raise ValueError("FailingEnv cannot take action 1")
        if action == 2:
            os._exit(3)
        return np.zeros(2, np.float32), 0.0, False, False, {}


class DiscreteObsEnv(FailingEnv):
    observation_space = spaces.Discrete(4)


def failing_in_worker(parent_pid):
    """A FailingEnv in the parent (which reads the spaces), an error in the workers."""
    if os.getpid() != parent_pid:
        raise OSError("no ROM in the worker")
    return FailingEnv()


def assert_steps_like_sync(env_fns, n_steps, seed, context=None, as_list=True, local_first=False):
    """Same seeds and random actions on WorkerVectorEnv and SyncVectorEnv: same numbers, masked
    resets of finished envs included."""
    workers = WorkerVectorEnv(env_fns, context=context, local_first=local_first)
    sync = SyncVectorEnv(env_fns, autoreset_mode=DISABLED)
    rng = np.random.default_rng(seed)
    n = len(env_fns)
    resets = 0
    try:
        assert workers.metadata["autoreset_mode"] == DISABLED
        assert workers.num_envs == n
        assert workers.single_observation_space == sync.single_observation_space
        assert workers.observation_space == sync.observation_space
        assert workers.action_space == sync.action_space
        np.testing.assert_array_equal(workers.reset(seed=seed)[0], sync.reset(seed=seed)[0])
        for _ in range(n_steps):
            actions = rng.integers(2, size=n)
            got, want = workers.step(actions.tolist() if as_list else actions), sync.step(actions)
            assert got[0].dtype == want[0].dtype and got[1].dtype == np.float64
            for name, a, b in zip(
                ("obs", "rewards", "terminated", "truncated"), got, want, strict=False
            ):
                np.testing.assert_array_equal(a, b, err_msg=name)
            done = got[2] | got[3]
            if done.any():
                resets += 1
                # One env gets an explicit seed, the others continue their streams.
                seeds = [None] * n
                seeds[int(np.flatnonzero(done)[0])] = int(rng.integers(1000))
                # the rows of the envs not reset keep their last observation, in both
                got = workers.reset(seed=seeds, options={"reset_mask": done})[0]
                want = sync.reset(seed=seeds, options={"reset_mask": done.copy()})[0]
                np.testing.assert_array_equal(got, want)
    finally:
        workers.close()
        sync.close()
    assert resets > 0, "no episode ended: the masked resets went untested"


# ----- exactly SyncVectorEnv's numbers -----


@pytest.mark.parametrize("num_envs", [2, 3])  # on 2 CPUs: workers 1.. poll, or all block
@pytest.mark.parametrize("local_first", [False, True])
def test_cartpole_steps_exactly_like_sync_vector_env(num_envs, local_first):
    fns = [partial(make_env, "CartPole-v1", seed=i) for i in range(num_envs)]
    assert_steps_like_sync(fns, 300, seed=5, local_first=local_first)


@pytest.mark.parametrize("local_first", [False, True])
def test_pong_steps_exactly_like_sync_vector_env(local_first):
    # episodes of 25 and 40 steps: resets of one env while the other plays on
    fns = [partial(make_env, "ALE/Pong-v5", seed=i, max_episode_steps=25 + 15 * i) for i in (0, 1)]
    assert_steps_like_sync(fns, 90, seed=1, local_first=local_first)


def test_spawn_context_and_numpy_actions():
    fns = [partial(make_env, "CartPole-v1", seed=i) for i in range(2)]
    assert_steps_like_sync(fns, 60, seed=2, context="spawn", as_list=False)


def test_reset_seeds_int_list_and_mask():
    def first_obs(seed):
        return make_env("CartPole-v1").reset(seed=seed)[0]

    envs = WorkerVectorEnv([partial(make_env, "CartPole-v1") for _ in range(2)])
    try:
        np.testing.assert_array_equal(envs.reset(seed=7)[0], [first_obs(7), first_obs(8)])
        np.testing.assert_array_equal(envs.reset(seed=[8, 7])[0], [first_obs(8), first_obs(7)])
        obs, _ = envs.reset(seed=[None, 3], options={"reset_mask": np.array([False, True])})
        np.testing.assert_array_equal(obs, [first_obs(8), first_obs(3)])
    finally:
        envs.close()


# ----- collect_episodes: workers == sync == async -----


def two_batches(envs, obs_dim=4, hidden_sizes=(16,)):
    policy = make_policy("numpy", obs_dim, hidden_sizes=hidden_sizes, bias=True, seed=2)
    rngs = slot_generators(11, envs.num_envs)
    return [collect_episodes(envs, policy, rngs, 6) for _ in range(2)]


def assert_same_batches(runs_a, runs_b, env_steps):
    for a, b in zip(runs_a, runs_b, strict=True):
        obs_a = a.obs.toarray() if hasattr(a.obs, "toarray") else a.obs
        obs_b = b.obs.toarray() if hasattr(b.obs, "toarray") else b.obs
        np.testing.assert_array_equal(obs_a, obs_b)
        for name in ("actions", "rewards", "ep_bounds", "ep_lengths", "ep_env"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
        assert a.steps == b.steps
        if env_steps:  # idle envs step in worker processes, wait in process
            assert a.env_steps == b.env_steps


def test_collect_episodes_workers_equals_sync_and_async():
    runs = {}
    for vectorization in ("workers", "sync", "async"):
        envs = make_vector_env("CartPole-v1", 3, seed=0, vectorization=vectorization)
        try:
            assert isinstance(envs, WorkerVectorEnv) == (vectorization == "workers")
            runs[vectorization] = two_batches(envs)
        finally:
            envs.close()
    assert_same_batches(runs["workers"], runs["async"], env_steps=True)
    assert_same_batches(runs["workers"], runs["sync"], env_steps=False)


def test_pong_auto_is_workers_and_equals_sync():
    kwargs = {"max_episode_steps": 40}
    runs = {}
    for vectorization in ("auto", "sync"):
        envs = make_vector_env("ALE/Pong-v5", 2, seed=0, vectorization=vectorization, **kwargs)
        try:
            assert isinstance(envs, WorkerVectorEnv) == (vectorization == "auto")
            runs[vectorization] = two_batches(envs, 6400, (200,))
        finally:
            envs.close()
    assert_same_batches(runs["auto"], runs["sync"], env_steps=False)


# ----- mistakes and failures -----


def test_env_error_is_raised_with_the_worker_and_the_message():
    envs = WorkerVectorEnv([FailingEnv, FailingEnv])
    envs.reset()
    with pytest.raises(RuntimeError, match="worker 1 failed to step: ValueError: FailingEnv can"):
        envs.step([0, 1])
    envs.step([0, 0])  # the other worker's reply was collected: still in lockstep
    envs.close()
    envs.close()
    assert envs.closed
    with pytest.raises(RuntimeError, match="after close"):
        envs.step([0, 0])


def test_local_env_error_keeps_the_workers_in_step():
    envs = WorkerVectorEnv([FailingEnv, FailingEnv, FailingEnv], local_first=True)
    try:
        envs.reset()
        with pytest.raises(RuntimeError, match="env 0 .in this process. failed.*cannot take"):
            envs.step([1, 0, 0])
        with pytest.raises(RuntimeError, match="worker 2 failed to step"):
            envs.step([0, 0, 1])
        envs.step([0, 0, 0])  # every reply was collected: still in lockstep
    finally:
        envs.close()
    assert envs.closed


@pytest.fixture
def alarm():
    """Fail (SIGALRM raises in the test) instead of hanging the suite."""

    def ring(signum, frame):
        raise TimeoutError("hung for 20 s")

    old = signal.signal(signal.SIGALRM, ring)
    signal.alarm(20)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


@pytest.mark.parametrize("local_first", [False, True])
def test_dead_worker_is_an_error_not_a_hang(alarm, local_first):
    envs = WorkerVectorEnv([FailingEnv, FailingEnv, FailingEnv], local_first=local_first)
    with pytest.raises(RuntimeError, match=r"worker 2 died during step \(exit code 3\)"):
        envs.step([0, 0, 2])
    assert envs.closed
    envs.close()


def test_dead_worker_0_is_an_error_not_a_hang(alarm):
    envs = WorkerVectorEnv([FailingEnv, FailingEnv])
    with pytest.raises(RuntimeError, match=r"worker 0 died during step \(exit code 3\)"):
        envs.step([2, 0])
    assert envs.closed
    envs.close()


def test_worker_that_cannot_build_its_env():
    with pytest.raises(RuntimeError, match="worker 0 failed to build its env: OSError: no ROM"):
        WorkerVectorEnv([partial(failing_in_worker, os.getpid())])


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="at least 1 env_fn"):
        WorkerVectorEnv([])
    with pytest.raises(ValueError, match="needs Box observations"):
        WorkerVectorEnv([DiscreteObsEnv])
    envs = WorkerVectorEnv([FailingEnv, FailingEnv])
    try:
        envs.reset()
        with pytest.raises(ValueError, match="step needs 2 actions, one per env, got 3"):
            envs.step([0, 0, 0])
        with pytest.raises(ValueError, match="reset_mask"):
            envs.reset(options={"reset_mask": [1, 0]})
        with pytest.raises(ValueError, match="only the option 'reset_mask'"):
            envs.reset(options={"difficulty": 2})
        with pytest.raises(ValueError, match="seed must be"):
            envs.reset(seed=[1])
        envs.step(np.zeros(2, np.int64))  # still usable
    finally:
        envs.close()
