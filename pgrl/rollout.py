"""Play complete episodes with a policy on a gymnasium vector env: the data of one REINFORCE batch.

Randomness is per env slot: slot ``j`` of ``S`` (one env copy) has its own generator (see
:func:`slot_generators`), which draws the seed its env is reset with at the slot's first episode
of a batch (its later episodes of the batch continue from the env's own state: a seeded Atari
reset costs ~20x a plain one) and the uniform ``u`` of each of its actions. Episode ``i`` of a
batch is played by slot ``i % S``, the slots' episodes in turn (slot ``j`` plays episodes ``j,
j + S, j + 2S, ...``), and the batch lists episodes by ``i``. A slot's episodes thus depend only
on its generator and the weights: not on which process or machine plays them, nor on how fast
the other slots are, so ``N`` workers of ``k`` envs (:mod:`pgrl.ray_runner`) play exactly the
episodes of ``N * k`` local envs.

:func:`collect_episodes` is the gist's inner loop on the ``S`` envs at once: every vector step,
each slot playing an episode draws its ``u``, the policy gives ``p = P(action = 1)`` for all of
them (one call), and each takes ``a = u < p``; their ``(obs, a, r)`` are recorded. With the
categorical head the policy gives the probabilities ``pi`` of all actions, and the same single
``u`` picks the first ``k`` with ``u < cumsum(pi)[k]`` (the head's ``sample`` in
:mod:`pgrl.distributions`). The gaussian head draws ``d`` standard normals ``eps`` instead and
takes ``a = mu + sigma * eps``; the env gets ``a`` clipped to its action bounds, the batch records
``a``. Its policy is asked one row at a time: an action carries ``mu``'s last bits, and a matrix
product's last bits depend on its number of rows (BLAS picks its kernel by size), so a slot's
actions would otherwise depend on how many slots share the call. A slot whose episode ended
starts its next one, or idles when it has played its share.

How envs step lies below that loop: the sub-envs of a ``SyncVectorEnv`` are stepped one by one,
only those playing (``SyncVectorEnv.step`` steps idle envs too and batches their infos, which
costs about as much as CartPole's physics); any other vector env steps all its envs together,
idle ones with action 0, unrecorded. Vector envs run with ``autoreset_mode=DISABLED``: a
finished env is reset here, ``envs.reset(options={"reset_mask": done})``, so no reset step can
be recorded by mistake.

On-policy: only ``n_episodes`` episodes are started, every one is finished with the weights of
the call, and the next batch reseeds every slot's env, so no episode straddles a weight
update.

Determinism: a batch is a function of the slots' generator states, the policy's weights and
the env only (nothing an env did in earlier batches carries over). So a run resumed from its
checkpoint (which holds every slot's generator) continues exactly, and vector envs of the same
sub-envs give the same episodes whether they step in process, in other processes or on other
machines (only ``env_steps`` differs). With one env a batch is exactly (``rng`` slot 0's
generator)::

    obs, _ = env.reset(seed=int(rng.integers(2**31)))
    for k in range(n_episodes):
        if k:
            obs, _ = env.reset()
        done = False
        while not done:
            a = int(policy.sample(obs[None], np.array([rng.random()]))[0])  # u < p
            next_obs, r, terminated, truncated, _ = env.step(a)  # record (obs, a, r)
            obs, done = next_obs, terminated or truncated

Storage: observations keep the env's dtype (float32 for CartPole). Integer observations (Pong's
int8 frame differences, ~26 nonzeros of 6400) are stored as :class:`pgrl.sparse.SparseRows`:
each env writes its rows into a fixed (1024, obs_dim) chunk, compressed when full or when the
episode ends, so a 10,000-step Pong episode takes ~1.5 MB instead of 64 MB (int8) or 512 MB
(float64).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
from gymnasium import spaces
from gymnasium.vector import AsyncVectorEnv, AutoresetMode, SyncVectorEnv, VectorEnv

from pgrl.envs import make_env
from pgrl.sparse import SparseRows
from pgrl.validate import VECTORIZATIONS, positive_int

__all__ = [
    "CHUNK_ROWS",
    "EpisodeBatch",
    "RolloutError",
    "collect_episodes",
    "episode_counts",
    "make_vector_env",
    "play_slots",
    "slot_generators",
]

# Rows of one env's write buffer: 6.5 MB of int8 Pong frames, compressed a chunk at a time.
CHUNK_ROWS = 1024
# Env seeds drawn per batch lie in [0, SEED_BOUND).
SEED_BOUND = 2**31


class RolloutError(RuntimeError):
    """Rollouts that cannot go on (e.g. remote workers that keep dying)."""


def slot_generators(seed: int, n_slots: int) -> list[np.random.Generator]:
    """The generators of env slots ``0 .. n_slots - 1`` of a run seeded with ``seed``.

    ``numpy.random.SeedSequence(seed).spawn``: independent streams, and slot ``j``'s does not
    depend on ``n_slots``.
    """
    n_slots = positive_int("n_slots", n_slots)
    return [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(n_slots)]


def slot_states(rngs: list[np.random.Generator]) -> dict:
    """The slots' generator states, as a checkpoint stores them: ``{"slots": [state, ...]}``."""
    return {"slots": [g.bit_generator.state for g in rngs]}


def set_slot_states(rngs: list[np.random.Generator], states: dict) -> None:
    """Put :func:`slot_states`' ``states`` back into ``rngs`` (ValueError if they do not fit)."""
    slots = states.get("slots") if isinstance(states, dict) else None
    if not isinstance(slots, list):
        raise ValueError("it holds one generator for all envs (an older pgrl), not one per slot")
    if len(slots) != len(rngs):
        raise ValueError(f"it holds {len(slots)} env slots, the config gives {len(rngs)}")
    for g, state in zip(rngs, slots, strict=True):
        g.bit_generator.state = state


def make_vector_env(
    env_id: str,
    num_envs: int = 1,
    seed: int | None = None,
    *,
    vectorization: str = "sync",
    context: str | None = None,
    **env_kwargs: Any,
) -> VectorEnv:
    """``num_envs`` copies of ``make_env(env_id, **env_kwargs)`` as one gymnasium vector env.

    Args:
        env_id: ``"CartPole-v1"``, ``"ALE/Pong-v5"`` or another gymnasium id with Discrete(n)
            actions and flat observations (see :func:`pgrl.envs.make_env`).
        num_envs: copies of the env.
        vectorization: ``"sync"`` steps every copy in this process (gymnasium's
            ``SyncVectorEnv``, no IPC; what pgrl's runners use: their parallelism is rollout
            workers, :mod:`pgrl.workers`); ``"async"`` gives each copy a process (gymnasium's
            ``AsyncVectorEnv``).
        seed: sub-env ``i`` is built with ``make_env(env_id, seed=seed + i)``, which seeds its
            first reset and its action space (``None``: from the OS). :func:`collect_episodes`
            reseeds every env from its generator at the start of each batch, so its batches
            depend on the generator, not on this seed.
        context: ``multiprocessing`` start method of ``"async"`` (``None``: the platform's).
        **env_kwargs: passed to :func:`pgrl.envs.make_env`, e.g. ``frameskip``,
            ``max_episode_steps``.

    Returns:
        A vector env with ``autoreset_mode=DISABLED`` (:func:`collect_episodes` resets finished
        envs itself) whose observations are not copied per step (``copy=False``; they are copied
        once, into the batch). The caller closes it.

    Raises:
        ValueError: ``num_envs`` or ``seed`` is not a valid integer, or ``env_id`` is unknown.
    """
    num_envs = positive_int("num_envs", num_envs)
    if vectorization not in VECTORIZATIONS:
        raise ValueError(f"vectorization must be one of {VECTORIZATIONS}, got {vectorization!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int | np.integer)):
        raise ValueError(f"seed must be an integer or None, got {seed!r}")
    env_fns = [
        partial(make_env, env_id, seed=None if seed is None else int(seed) + i, **env_kwargs)
        for i in range(num_envs)
    ]
    if vectorization == "sync":
        return SyncVectorEnv(env_fns, copy=False, autoreset_mode=AutoresetMode.DISABLED)
    return AsyncVectorEnv(
        env_fns, copy=False, context=context, autoreset_mode=AutoresetMode.DISABLED
    )


@dataclass(frozen=True, eq=False)
class EpisodeBatch:
    """Complete episodes stacked along time, round by round (see :func:`play_slots`).

    Attributes:
        obs: (T, obs_dim) observation each action was taken on: a dense array in the env's dtype
            (float32 for CartPole), or :class:`SparseRows` for integer observations (Pong).
        actions: (T,) int8 actions in [0, n_actions) (int64 beyond 128 actions); the gaussian
            head's (T, d) actions as sampled, in float32 (gymnasium's action dtype; the env got
            them clipped to its bounds, :func:`env_actions`).
        rewards: (T,) float64 reward received after each action.
        ep_bounds: (E + 1,) int64 offsets: episode k is rows ``ep_bounds[k]:ep_bounds[k + 1]``.
        ep_returns: (E,) float64 sum of each episode's rewards.
        ep_lengths: (E,) int64 steps of each episode.
        ep_env: (E,) int64 env slot that played each episode.
        ep_truncated: (E,) bool: the episode was cut by a time limit (``truncated``), not ended
            by a terminal state, so its return would have gone on.
        last_obs: (E, obs_dim) the observation after each episode's last action, in the env's
            dtype: the state a value network bootstraps a truncated episode's return from.
        steps: T, the recorded steps.
        env_steps: all env steps taken, including unrecorded ones of idle envs in worker
            processes (for throughput).
    """

    obs: np.ndarray | SparseRows
    actions: np.ndarray
    rewards: np.ndarray
    ep_bounds: np.ndarray
    ep_returns: np.ndarray
    ep_lengths: np.ndarray
    ep_env: np.ndarray
    ep_truncated: np.ndarray
    last_obs: np.ndarray
    steps: int
    env_steps: int

    @property
    def n_episodes(self) -> int:
        return int(self.ep_lengths.size)

    @property
    def nbytes(self) -> int:
        """Bytes held by the per-step arrays (obs, actions, rewards) and the last observations."""
        return self.obs.nbytes + self.actions.nbytes + self.rewards.nbytes + self.last_obs.nbytes

    def split(self, x):
        """Per-episode views of a (T, ...) array (or SparseRows) aligned with the batch."""
        if len(x) != self.steps:
            raise ValueError(f"split needs {self.steps} rows, one per recorded step, got {len(x)}")
        b = self.ep_bounds.tolist()
        return [x[b[k] : b[k + 1]] for k in range(self.n_episodes)]

    def episode_rewards(self) -> list[np.ndarray]:
        """(T_k,) rewards of each episode, e.g. for ``discount_rewards``."""
        return self.split(self.rewards)

    def episode(self, k: int) -> tuple[np.ndarray | SparseRows, np.ndarray, np.ndarray]:
        """``(obs, actions, rewards)`` of episode ``k`` (views)."""
        lo, hi = int(self.ep_bounds[k]), int(self.ep_bounds[k + 1])
        return self.obs[lo:hi], self.actions[lo:hi], self.rewards[lo:hi]


def collect_episodes(
    envs: VectorEnv,
    policy,
    rngs: list[np.random.Generator],
    n_episodes: int,
    progress: Callable[[int, int], object] | None = None,
) -> EpisodeBatch:
    """Play episodes ``0 .. n_episodes - 1`` of a batch with the policy's current weights,
    episode ``i`` on slot ``i % S`` (``S = envs.num_envs``), listed by ``i``.

    See the module docstring for the loop, the sampling rule and the determinism contract.

    Args:
        envs: a vector env from :func:`make_vector_env` (or any gymnasium vector env with
            ``autoreset_mode=DISABLED``, ``Discrete(n)`` actions, ``n`` the policy's
            ``n_actions``, and flat Box observations).
        policy: a pgrl policy (``make_policy``) whose ``obs_dim`` is the observation width.
        rngs: one generator per env (:func:`slot_generators`); slot ``j``'s draws its episodes'
            seeds and the uniforms ``u`` of its actions (``policy.sample``), and is left where
            it stopped.
        n_episodes: episodes to play, at least 1.
        progress: called as ``progress(episodes_done, steps_done)`` each time an episode ends,
            e.g. ``lambda k, t: bar.update()`` for a tqdm bar.

    Returns:
        The episodes as an :class:`EpisodeBatch`; ``ep_env`` gives each one's slot.

    Raises:
        ValueError: a bad ``n_episodes``, ``rngs`` or ``progress``; ``envs`` not a vector env,
            with another action count than the policy's, the wrong autoreset mode or an
            observation width that is not the policy's.
    """
    n_episodes = positive_int("n_episodes", n_episodes)
    counts = episode_counts(n_episodes, getattr(envs, "num_envs", 0))
    return play_slots(envs, policy, rngs, counts, progress)


def episode_counts(n_episodes: int, n_slots: int) -> list[int]:
    """Episodes each slot plays of a batch of ``n_episodes`` (episode ``i`` on slot ``i % S``)."""
    return [len(range(j, n_episodes, n_slots)) for j in range(n_slots)]


def play_slots(
    envs: VectorEnv, policy, rngs: list[np.random.Generator], counts: list[int], progress=None
) -> EpisodeBatch:
    """Slot ``j`` of ``envs`` plays ``counts[j]`` episodes with generator ``rngs[j]``; the batch
    lists them round by round (every slot's first episode, then every slot's second, ...).

    :func:`collect_episodes` is this with the counts of a batch; a rollout worker holding some
    of a run's slots calls it with theirs.
    """
    if progress is not None and not callable(progress):
        raise ValueError(f"progress must be a callable or None, got {progress!r}")
    obs_space = _check_envs(envs, policy)
    n_slots = envs.num_envs
    if (
        not isinstance(rngs, list | tuple)
        or len(rngs) != n_slots
        or not all(isinstance(g, np.random.Generator) for g in rngs)
    ):
        raise ValueError(
            f"rngs must be a list of {n_slots} numpy.random.Generator, one per env "
            f"(pgrl.rollout.slot_generators(seed, {n_slots})), got {_describe(rngs)}"
        )
    if len(counts) != n_slots or min(counts) < 0 or sum(counts) < 1:
        raise ValueError(f"counts must give each of {n_slots} envs >= 0 episodes, got {counts}")
    dist = policy.distribution
    slots = _InProcess(envs) if isinstance(envs, SyncVectorEnv) else _Lockstep(envs)
    episodes = _Recorder(n_slots, obs_space, progress, dist)
    left = list(counts)  # episodes each slot has yet to start
    playing = np.flatnonzero(left)  # slots playing an episode of this batch
    seeds = [_next_seed(rngs, left, counts, j) for j in range(n_slots)]
    # idle slots (lockstep only) play 0; the gaussian head's actions are clipped for the env
    actions = np.zeros((n_slots, *dist.action_shape), dtype=episodes.actions.dtype)
    box = envs.single_action_space if isinstance(envs.single_action_space, spaces.Box) else None
    obs = slots.reset(seeds)
    while True:
        u = np.array([dist.noise(rngs[j]) for j in playing.tolist()])
        if dist.sample_rows_alone:
            for k, j in enumerate(playing.tolist()):
                actions[j] = policy.sample(obs[j : j + 1], u[k : k + 1])[0]
        else:
            actions[playing] = policy.sample(obs[playing], u)
        episodes.record(obs, actions, playing)
        sent = actions if box is None else env_actions(actions, box)
        obs, rewards, done, truncated = slots.step(sent, playing)
        ended = episodes.reward(obs, rewards, done, truncated, playing)
        if episodes.n_episodes == sum(counts):  # only needed episodes are started: all ended
            return episodes.build(slots.env_steps)
        for i in ended:
            if not left[i]:
                playing = playing[playing != i]
                actions[i] = 0
        if done.any():
            seeds = [_next_seed(rngs, left, counts, j) if done[j] else None for j in range(n_slots)]
            obs = slots.reset_done(done, seeds)


# The env gets the gaussian head's actions on a grid of this many steps across its bounds.
ACTION_STEPS = 2**20


def env_actions(actions: np.ndarray, space) -> np.ndarray:
    """What the env gets for the gaussian head's actions: ``clip(a, low, high)`` rounded to the
    nearest of :data:`ACTION_STEPS` steps across ``[low, high]`` (a millionth of the range),
    in the action space's dtype.

    The grid keeps the backends' episodes the same: their weights, and so their ``mu``, differ
    in the last float64 bits (their matrix products add in different orders), and a float32
    action alone would pass that on whenever ``a`` is near 0, where float32's steps are finer
    than the difference."""
    low, high = space.low.astype(np.float64), space.high.astype(np.float64)
    step = (high - low) / ACTION_STEPS
    k = np.round((np.clip(actions, low, high) - low) / step)
    return (low + k * step).astype(space.dtype)


def _next_seed(rngs, left: list[int], counts: list[int], j: int) -> int | None:
    """Slot ``j`` starts an episode if it has one left; the first of the call is reset with a
    seed drawn from the slot's generator, the others (``None``) continue the env's own state."""
    if not left[j]:
        return None
    left[j] -= 1
    return int(rngs[j].integers(SEED_BOUND)) if left[j] == counts[j] - 1 else None


def _describe(value) -> str:
    if isinstance(value, list | tuple):
        return f"{type(value).__name__} of {len(value)}"
    return type(value).__name__


class _InProcess:
    """The sub-envs of a ``SyncVectorEnv``, stepped one by one, only those playing:
    ``SyncVectorEnv.step`` would step idle envs too, and its per-env batching of infos costs
    about as much as CartPole's physics."""

    def __init__(self, envs: SyncVectorEnv):
        self.envs = envs.envs
        space = envs.single_observation_space
        self.obs = np.zeros((len(self.envs), *space.shape), dtype=space.dtype)
        self.rewards = np.zeros(len(self.envs))
        self.done = np.zeros(len(self.envs), dtype=bool)
        self.truncated = np.zeros(len(self.envs), dtype=bool)
        self.env_steps = 0

    def reset(self, seeds: list[int | None]) -> np.ndarray:
        for i, env in enumerate(self.envs):
            self.obs[i] = env.reset(seed=seeds[i])[0]
        return self.obs

    def step(self, actions: np.ndarray, playing: np.ndarray):
        self.done[:] = False
        for i in playing.tolist():
            self.obs[i], self.rewards[i], terminated, truncated, _ = self.envs[i].step(actions[i])
            self.done[i] = terminated or truncated
            self.truncated[i] = truncated and not terminated
        self.env_steps += len(playing)
        return self.obs, self.rewards, self.done, self.truncated

    def reset_done(self, done: np.ndarray, seeds: list[int | None]) -> np.ndarray:
        for i in np.flatnonzero(done).tolist():
            self.obs[i] = self.envs[i].reset(seed=seeds[i])[0]
        return self.obs


class _Lockstep:
    """Any other gymnasium vector env: every env steps every time (idle ones with action 0), and
    finished envs are reset by mask."""

    def __init__(self, envs: VectorEnv):
        self.envs = envs
        self.env_steps = 0

    def reset(self, seeds: list[int | None]) -> np.ndarray:
        return self.envs.reset(seed=seeds)[0]

    def step(self, actions: np.ndarray, playing: np.ndarray):
        obs, rewards, terminated, truncated, _ = self.envs.step(actions)
        self.env_steps += self.envs.num_envs
        return obs, rewards, terminated | truncated, truncated & ~terminated

    def reset_done(self, done: np.ndarray, seeds: list[int | None]) -> np.ndarray:
        return self.envs.reset(seed=seeds, options={"reset_mask": done})[0]


class _Recorder:
    """The episodes of one batch: each env writes its rows into a fixed chunk, compacted (and
    for integer observations compressed to SparseRows) when full or when the episode ends;
    finished episodes are concatenated once, at the end."""

    def __init__(self, num_envs: int, obs_space: spaces.Box, progress, dist):
        self.sparse = np.issubdtype(obs_space.dtype, np.integer)
        self.progress = progress
        self.obs = np.zeros((num_envs, CHUNK_ROWS, *obs_space.shape), dtype=obs_space.dtype)
        shape = (num_envs, CHUNK_ROWS, *dist.action_shape)
        self.actions = np.zeros(shape, dtype=dist.action_dtype)
        self.rewards = np.zeros((num_envs, CHUNK_ROWS), dtype=np.float64)
        self.rows = [0] * num_envs  # rows filled in each env's chunk
        self.open_parts: list[list[tuple]] = [[] for _ in range(num_envs)]  # episode so far
        self.rounds = [0] * num_envs  # episodes each env has finished
        # ((round, env), parts, (truncated, last obs)) of finished episodes
        self.finished: list[tuple] = []
        self.steps = 0

    @property
    def n_episodes(self) -> int:
        return len(self.finished)

    def record(self, obs: np.ndarray, actions: np.ndarray, playing: np.ndarray) -> None:
        """The observation each playing env acted on, and its action."""
        for i in playing.tolist():
            j = self.rows[i]
            self.obs[i, j] = obs[i]
            self.actions[i, j] = actions[i]

    def reward(self, obs, rewards, done, truncated, playing: np.ndarray) -> list[int]:
        """Each playing env's reward for its last action (and, where it ended the episode, the
        observation it led to); returns the envs whose episode ended, ascending, once each has
        been added to the batch."""
        ended = []
        for i in playing.tolist():
            j = self.rows[i]
            self.rewards[i, j] = rewards[i]
            self.rows[i] = j + 1
            if done[i]:
                self._flush(i)
                self._end_episode(i, (bool(truncated[i]), obs[i].copy()))
                ended.append(i)
            elif j + 1 == CHUNK_ROWS:
                self._flush(i)
        return ended

    def _flush(self, i: int) -> None:
        """Move env i's chunk rows into a compact part; the chunk is reused."""
        j = self.rows[i]
        obs = self.obs[i, :j]
        obs = SparseRows.from_dense(obs) if self.sparse else obs.copy()
        self.open_parts[i].append((obs, self.actions[i, :j].copy(), self.rewards[i, :j].copy()))
        self.rows[i] = 0

    def _end_episode(self, i: int, end: tuple[bool, np.ndarray]) -> None:
        parts, self.open_parts[i] = self.open_parts[i], []
        self.finished.append(((self.rounds[i], i), parts, end))
        self.rounds[i] += 1
        self.steps += sum(len(p[1]) for p in parts)
        if self.progress is not None:
            self.progress(self.n_episodes, self.steps)

    def build(self, env_steps: int) -> EpisodeBatch:
        """The batch, episodes round by round, by env within a round."""
        self.finished.sort(key=lambda e: e[0])
        episodes = [parts for _, parts, _ in self.finished]
        slots = [key[1] for key, _, _ in self.finished]
        ends = [end for _, _, end in self.finished]
        return stack_episodes(episodes, slots, ends, env_steps, self.sparse)


def stack_episodes(
    episodes: list[list[tuple]], slots: list[int], ends: list[tuple], env_steps: int, sparse: bool
) -> EpisodeBatch:
    """An :class:`EpisodeBatch` of ``episodes``, each a list of consecutive ``(obs, actions,
    rewards)`` parts; ``slots[k]`` is the env slot that played episode ``k`` and ``ends[k]`` is
    ``(truncated, last_obs)`` of its end."""
    parts = [part for episode in episodes for part in episode]
    obs_parts, action_parts, reward_parts = zip(*parts, strict=True)
    obs = SparseRows.concatenate(list(obs_parts)) if sparse else np.concatenate(obs_parts)
    rewards = np.concatenate(reward_parts)
    lengths = np.array([sum(len(p[1]) for p in e) for e in episodes], dtype=np.int64)
    bounds = np.zeros(lengths.size + 1, dtype=np.int64)
    np.cumsum(lengths, out=bounds[1:])
    return EpisodeBatch(
        obs=obs,
        actions=np.concatenate(action_parts),
        rewards=rewards,
        ep_bounds=bounds,
        ep_returns=np.add.reduceat(rewards, bounds[:-1]),
        ep_lengths=lengths,
        ep_env=np.array(slots, dtype=np.int64),
        ep_truncated=np.array([truncated for truncated, _ in ends], dtype=bool),
        last_obs=np.stack([last for _, last in ends]),
        steps=int(bounds[-1]),
        env_steps=int(env_steps),
    )


def _check_envs(envs, policy) -> spaces.Box:
    """The single-env observation space, after checking envs and policy fit each other."""
    if not isinstance(envs, VectorEnv):
        raise ValueError(
            "envs must be a gymnasium vector env (pgrl.rollout.make_vector_env), "
            f"got {type(envs).__name__}"
        )
    mode = envs.metadata.get("autoreset_mode")
    if mode != AutoresetMode.DISABLED:
        raise ValueError(
            f"envs must have autoreset_mode=DISABLED (collect_episodes resets finished envs "
            f"itself), got {mode}; build them with pgrl.rollout.make_vector_env"
        )
    obs_dim = getattr(policy, "obs_dim", None)
    dist = getattr(policy, "distribution", None)
    if obs_dim is None or dist is None or not callable(getattr(policy, "sample", None)):
        raise ValueError(f"policy must be a pgrl policy (pgrl.make_policy), got {policy!r}")
    problem = dist.check_action_space(envs.single_action_space)
    if problem:
        raise ValueError(problem)
    space = envs.single_observation_space
    if not isinstance(space, spaces.Box) or len(space.shape) != 1:
        raise ValueError(f"pgrl needs flat Box observations (obs_dim,), got {space}")
    if space.shape[0] != obs_dim:
        raise ValueError(
            f"the env's observations have width {space.shape[0]} but the policy takes "
            f"obs_dim={obs_dim}"
        )
    return space
