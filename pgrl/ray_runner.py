"""Rollouts on Ray (``env.runner = "ray"``): a run's env slots on rollout-worker actors.

Worker ``w`` (one CPU) holds slots ``w*k .. w*k + k - 1`` (``k = env.envs_per_worker``). Per
update it gets the weights and its slots' generator states and returns their episodes and new
states; the learner lists the episodes round by round, by slot, so ``N`` workers of ``k`` envs
give the episodes of ``N * k`` local envs. Ray restarts a worker that dies and replays its call
from the same generator states, so the batch is unchanged.
"""

from __future__ import annotations

import time

import numpy as np

from pgrl.build import build_policy, env_actions, env_spaces
from pgrl.config import Config, ConfigError
from pgrl.rollout import (
    EpisodeBatch,
    RolloutError,
    make_vector_env,
    play_slots,
    set_slot_states,
    slot_states,
    stack_episodes,
)

MAX_RESTARTS = 3  # per rollout worker, in one run


class RolloutWorker:
    """A Ray actor: ``k`` envs of the config and a policy that only acts."""

    def __init__(self, cfg: Config, backend: str, n_envs: int):
        e = cfg.env
        self.envs = make_vector_env(e.id, n_envs, vectorization=e.vectorization, **e.make_kwargs())
        obs_dim = int(self.envs.single_observation_space.shape[0])
        self.policy = build_policy(cfg, obs_dim, backend, env_actions(self.envs))

    def play(self, weights: dict, states: list[dict], counts: list[int]):
        """``(batch, new generator states, seconds)`` of this worker's slots' episodes."""
        t0 = time.perf_counter()
        self.policy.set_weights(weights)
        rngs = [np.random.default_rng() for _ in states]
        set_slot_states(rngs, {"slots": states})
        batch = play_slots(self.envs, self.policy, rngs, counts)
        return batch, slot_states(rngs)["slots"], time.perf_counter() - t0


class RayRollouts:
    """The learner's side: ``num_workers`` :class:`RolloutWorker` actors; quacks like the
    vector env :func:`pgrl.reinforce.train` plays on (``num_envs``, observation space)."""

    def __init__(self, cfg: Config, backend: str, address: str | None = None):
        from pgrl.ray_connect import connect

        # a bad env.id or env.kwargs is reported before a Ray instance starts
        self.single_observation_space, self.single_action_space = env_spaces(cfg)
        self.ray = connect(address)
        e = cfg.env
        cpus = self.ray.cluster_resources().get("CPU", 0)
        if e.num_workers > cpus:
            raise ConfigError(
                f"env.num_workers = {e.num_workers}: the Ray cluster has {cpus:g} CPUs, and each "
                "rollout worker takes one"
            )
        self.k = e.envs_per_worker
        self.num_envs = e.num_workers * self.k
        actor = self.ray.remote(
            num_cpus=1, max_restarts=MAX_RESTARTS, max_task_retries=MAX_RESTARTS
        )(RolloutWorker)
        self.workers = [actor.remote(cfg, backend, self.k) for _ in range(e.num_workers)]
        self.timing = {"rollout": 0.0, "broadcast": 0.0, "transfer": 0.0}

    def collect(self, policy, rngs: list[np.random.Generator], n_episodes: int) -> EpisodeBatch:
        """:func:`pgrl.rollout.collect_episodes` on the workers; ``timing`` says where the time
        went: broadcast (weights into the object store), rollout (the slowest worker's own
        time), transfer (the rest of the wait: scheduling and the episodes' way back)."""
        from ray.exceptions import RayActorError

        t0 = time.perf_counter()
        weights = self.ray.put(policy.get_weights())
        t1 = time.perf_counter()
        states = slot_states(rngs)["slots"]
        counts = [len(range(j, n_episodes, self.num_envs)) for j in range(self.num_envs)]
        mine = [slice(w * self.k, (w + 1) * self.k) for w in range(len(self.workers))]
        busy = [w for w in range(len(self.workers)) if sum(counts[mine[w]])]
        futures = [
            self.workers[w].play.remote(weights, states[mine[w]], counts[mine[w]]) for w in busy
        ]
        try:  # a worker that dies is restarted by Ray and replays the same call
            results = dict(zip(busy, self.ray.get(futures), strict=True))
        except RayActorError as e:
            reason = str(e).splitlines()[0][:200]
            raise RolloutError(
                f"a rollout worker died more than {MAX_RESTARTS} times: {reason}"
            ) from None
        t2 = time.perf_counter()
        batch = self._merge(results)
        for w, (_, new_states, _) in results.items():
            set_slot_states(rngs[mine[w]], {"slots": new_states})
        slowest = max(seconds for _, _, seconds in results.values())
        self.timing = {"rollout": slowest, "broadcast": t1 - t0, "transfer": t2 - t1 - slowest}
        return batch

    def _merge(self, results: dict) -> EpisodeBatch:
        """The workers' episodes as one batch, round by round, by slot within a round."""
        keyed, sparse, env_steps = [], False, 0
        for w, (batch, _, _) in results.items():
            rounds = {}
            for i in range(batch.n_episodes):
                slot = w * self.k + int(batch.ep_env[i])
                r = rounds[slot] = rounds.get(slot, -1) + 1
                end = (bool(batch.ep_truncated[i]), batch.last_obs[i])
                keyed.append(((r, slot), batch.episode(i), end))
            sparse = not isinstance(batch.obs, np.ndarray)
            env_steps += batch.env_steps
        keyed.sort(key=lambda item: item[0])
        episodes = [[episode] for _, episode, _ in keyed]
        slots, ends = [key[1] for key, _, _ in keyed], [end for _, _, end in keyed]
        return stack_episodes(episodes, slots, ends, env_steps, sparse)

    def close(self) -> None:
        for w in self.workers:
            self.ray.kill(w)
