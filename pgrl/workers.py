"""Rollout workers: env slots and a copy of the networks, playing whole episodes and computing
what the update needs from them, in this process (``env.runner = "local"``), in worker
processes (``"processes"``) or on Ray actors (``"ray"``, :mod:`pgrl.ray_runner`).

A run has ``S`` env slots: ``env.num_envs`` with the local runner, ``env.num_workers *
env.envs_per_worker = N * k`` otherwise; worker ``w`` holds slots ``w*k .. w*k + k - 1``. Per
update the learner sends every worker the weights and its slots' generator states; the worker
plays its slots' episodes (:func:`pgrl.rollout.play_slots`) and keeps them. REINFORCE then asks
it for its slots' parts of the gradient (:mod:`pgrl.slots`) and adds them in slot order: the
frames never leave the worker, only the episodes' rows (returns, lengths) and the gradients do.
PPO, whose minibatches mix slots, gets the episodes themselves.

An episode depends only on its slot's generator and the weights, and a slot's gradient part
only on its episodes and the weights, so every runner and every worker count gives the same
bits. A worker that dies (a killed process, a lost Ray actor) is restarted and replays the
update from the same generator states and weights, so results do not change.
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing as mp
import os
import signal
import threading
import time

import numpy as np

from pgrl.build import (
    build_policy,
    build_value_net,
    check_env_memory,
    env_actions,
    env_spaces,
    make_envs,
)
from pgrl.config import Config, ConfigError
from pgrl.rollout import (
    EpisodeBatch,
    RolloutError,
    episode_counts,
    play_slots,
    set_slot_states,
    slot_states,
    stack_episodes,
)
from pgrl.slots import Slots

MAX_RESTARTS = 3  # per rollout worker, in one run
CLOSE_TIMEOUT = 5.0  # seconds close() waits for worker processes before terminating them


class RolloutWorker:
    """``n_envs`` env slots of a run's config, and its policy (and value net) to play with.

    ``networks=False`` leaves ``policy`` and ``value`` for the caller to set (the local runner
    lends the learner's own).
    """

    def __init__(self, cfg: Config, backend: str, n_envs: int, networks: bool = True):
        self.cfg = cfg
        self.envs = make_envs(cfg, n_envs)
        self.policy = self.value = self.slots = None
        if networks:
            obs_dim = int(self.envs.single_observation_space.shape[0])
            self.policy = build_policy(cfg, obs_dim, backend, env_actions(self.envs, cfg))
            if cfg.train.baseline == "value":
                self.value = build_value_net(cfg, obs_dim, backend, self.policy)

    def play(
        self, weights, value_weights, states: list, counts: list[int], episodes: bool, obs_norm=None
    ):
        """Slot ``j`` plays ``counts[j]`` episodes from generator state ``states[j]`` with these
        weights and observation statistics (None: as they are). Returns ``(batch, moments, new
        states, seconds)``: with ``episodes`` the batch itself; otherwise its rows without
        observations and the slots' moments (:class:`pgrl.slots.Slots`), the slots kept for
        :meth:`gradients`."""
        t0 = time.perf_counter()
        if weights is not None:
            self.policy.set_weights(weights)
        if value_weights is not None:
            self.value.set_weights(value_weights)
        if obs_norm is not None:
            self.policy.obs_norm.set_state(obs_norm)
        rngs = [np.random.default_rng() for _ in states]
        set_slot_states(rngs, {"slots": states})
        batch = play_slots(self.envs, self.policy, rngs, counts)
        self.slots = None
        moments = []
        if not episodes:
            self.slots = Slots(batch, self.policy, self.value, self.cfg)
            moments = self.slots.moments
            batch = without_frames(batch)
        return batch, moments, slot_states(rngs)["slots"], time.perf_counter() - t0

    def gradients(self, center: float, scale: float, *replay):
        """``(parts, seconds)``: the slots' gradient parts (:meth:`pgrl.slots.Slots.gradients`).
        A worker restarted since :meth:`play` first replays it from ``replay``, its arguments."""
        t0 = time.perf_counter()
        if self.slots is None:
            self.play(*replay)
        return self.slots.gradients(center, scale), time.perf_counter() - t0

    def value_gradients(self, value_weights, *replay):
        """``(parts, seconds)``: the slots' value-fit parts at ``value_weights``."""
        t0 = time.perf_counter()
        if self.slots is None:
            self.play(*replay)
        if value_weights is not None:
            self.value.set_weights(value_weights)
        return self.slots.value_gradients(self.value), time.perf_counter() - t0

    def close(self) -> None:
        self.envs.close()


def without_frames(batch: EpisodeBatch) -> EpisodeBatch:
    """The batch's rows for logging: observations (and last observations) of width 0."""
    return dataclasses.replace(
        batch,
        obs=np.zeros((batch.steps, 0), np.float32),
        last_obs=np.zeros((batch.n_episodes, 0), np.float32),
    )


def merge(batches: list[tuple[int, EpisodeBatch]]) -> EpisodeBatch:
    """The workers' episodes as one batch, round by round, by slot within a round;
    ``batches``: ``(first slot, batch)`` of each worker that played."""
    keyed, env_steps = [], 0
    for first, batch in batches:
        rounds = {}
        for i in range(batch.n_episodes):
            slot = first + int(batch.ep_env[i])
            r = rounds[slot] = rounds.get(slot, -1) + 1
            end = (bool(batch.ep_truncated[i]), batch.last_obs[i])
            keyed.append(((r, slot), batch.episode(i), end))
        env_steps += batch.env_steps
    keyed.sort(key=lambda item: item[0])
    episodes = [[episode] for _, episode, _ in keyed]
    slots, ends = [key[1] for key, _, _ in keyed], [end for _, _, end in keyed]
    sparse = not isinstance(batches[0][1].obs, np.ndarray)
    return stack_episodes(episodes, slots, ends, env_steps, sparse)


class LocalRunner:
    """Every slot in this process: one :class:`RolloutWorker` with the learner's networks.

    A runner is also the update's slots (:func:`pgrl.reinforce.reinforce_update`): after
    :meth:`play`, ``moments``, :meth:`gradients` and :meth:`value_gradients` are its slots'.
    """

    def __init__(self, cfg: Config, backend: str):
        self.worker = RolloutWorker(cfg, backend, cfg.env.num_envs, networks=False)
        envs = self.worker.envs
        self.num_envs = envs.num_envs
        self.single_observation_space = envs.single_observation_space
        self.single_action_space = envs.single_action_space
        self.timing, self.moments = {}, []

    def play(self, policy, value, rngs, n_episodes: int, episodes: bool):
        """``(batch, slots)`` of the next ``n_episodes`` (see :meth:`RolloutWorker.play`): the
        batch (its frames only with ``episodes``), and this runner as its slots (None with
        ``episodes``)."""
        w = self.worker
        w.policy, w.value = policy, value
        states, counts = slot_states(rngs)["slots"], episode_counts(n_episodes, self.num_envs)
        batch, self.moments, new_states, seconds = w.play(None, None, states, counts, episodes)
        set_slot_states(rngs, {"slots": new_states})
        self.timing = {"rollout": seconds, "gradient": 0.0}
        return batch, None if episodes else self

    def gradients(self, center: float, scale: float) -> list:
        parts, seconds = self.worker.gradients(center, scale)
        self.timing["gradient"] += seconds
        return parts

    def value_gradients(self, value) -> list:
        parts, seconds = self.worker.value_gradients(None)
        self.timing["gradient"] += seconds
        return parts

    def close(self) -> None:
        self.worker.close()


class RemoteRunner:
    """The learner's side of rollout workers elsewhere: ``num_workers`` workers of
    ``envs_per_worker`` slots. A transport gives :meth:`_call`; this class plays and gathers.

    Like :class:`LocalRunner`, it is also the update's slots. ``timing`` (seconds of the last
    update): rollout (the slowest worker's play), gradient (the
    slowest worker's gradient calls, added over calls), broadcast (sending the weights) and
    transfer (the rest of the waits: scheduling, pickling and the results' way back).
    """

    def __init__(self, cfg: Config, backend: str):
        e = cfg.env
        # a bad env.id or env.kwargs is reported before a worker starts
        self.single_observation_space, self.single_action_space = env_spaces(cfg)
        check_env_memory(cfg, "env.envs_per_worker", e.envs_per_worker)
        self.cfg, self.backend = cfg, backend
        self.k = e.envs_per_worker
        self.n_workers = e.num_workers
        self.num_envs = self.n_workers * self.k
        self.timing, self.moments = {}, []
        self._played = {}  # worker -> the arguments of its play this update (for replays)

    def play(self, policy, value, rngs, n_episodes: int, episodes: bool):
        """``(batch, slots)``, as :meth:`LocalRunner.play`; the batch has no frames unless
        ``episodes``, and ``slots`` asks the workers for their gradient parts."""
        t0 = time.perf_counter()
        weights = self._share(policy.get_weights())
        value_weights = None if value is None else self._share(value.get_weights())
        obs_norm = None if policy.obs_norm is None else policy.obs_norm.state()
        self.timing = {"broadcast": time.perf_counter() - t0, "gradient": 0.0, "transfer": 0.0}
        states = slot_states(rngs)["slots"]
        counts = episode_counts(n_episodes, self.num_envs)
        mine = [slice(w * self.k, (w + 1) * self.k) for w in range(self.n_workers)]
        self._played = {
            w: (weights, value_weights, states[mine[w]], counts[mine[w]], episodes, obs_norm)
            for w in range(self.n_workers)
            if sum(counts[mine[w]])
        }
        results = self._timed("rollout", "play", self._played)
        batch = merge([(w * self.k, results[w][0]) for w in sorted(results)])
        for w, (_, _, new_states, _) in results.items():
            set_slot_states(rngs[mine[w]], {"slots": new_states})
        if episodes:
            return batch, None
        self.moments = [m for w in sorted(results) for m in results[w][1]]
        return batch, self

    def _timed(self, phase: str, method: str, args: dict) -> dict:
        """``{worker: result}`` of ``method`` on the workers in ``args``, with the slowest
        worker's seconds (each result's last item) added to ``timing[phase]`` and the rest of the
        wait to ``timing["transfer"]``."""
        t0 = time.perf_counter()
        results = self._call(method, args)
        wait = time.perf_counter() - t0
        slowest = max(r[-1] for r in results.values())
        self.timing[phase] = self.timing.get(phase, 0.0) + slowest
        self.timing["transfer"] += max(wait - slowest, 0.0)
        return results

    def gradients(self, center: float, scale: float) -> list:
        results = self._timed("gradient", "gradients", {w: (center, scale) for w in self._played})
        return [part for w in sorted(results) for part in results[w][0]]

    def value_gradients(self, value) -> list:
        weights = self._share(value.get_weights())
        results = self._timed("gradient", "value_gradients", {w: (weights,) for w in self._played})
        return [part for w in sorted(results) for part in results[w][0]]

    def _share(self, weights: dict):
        """The weights as the transport sends them to every worker."""
        return weights

    def _call(self, method: str, args: dict) -> dict:
        raise NotImplementedError


class ProcessRunner(RemoteRunner):
    """Rollout workers as local processes (``env.runner = "processes"``), one pipe each.

    Workers start from a fork server (no TensorFlow state is inherited) and end with the
    learner. A worker that dies is restarted and replays the update (at most
    :data:`MAX_RESTARTS` times per worker and run).
    """

    def __init__(self, cfg: Config, backend: str):
        super().__init__(cfg, backend)
        self._context = mp.get_context("forkserver")
        self.restarts = [0] * self.n_workers
        self.processes = [None] * self.n_workers
        self.pipes = [None] * self.n_workers
        try:
            for w in range(self.n_workers):
                self._start(w)
            for w in range(self.n_workers):
                self._ready(w)
        except BaseException:
            self.close()
            raise

    @property
    def pids(self) -> list[int]:
        """The worker processes' PIDs."""
        return [p.pid for p in self.processes]

    def _start(self, w: int) -> None:
        mine, theirs = self._context.Pipe()
        process = self._context.Process(
            target=_serve, args=(theirs, os.getpid(), self.cfg, self.backend, self.k), daemon=True
        )
        process.start()
        theirs.close()
        self.processes[w], self.pipes[w] = process, mine

    def _ready(self, w: int) -> None:
        """Wait for a started worker to have built its envs and networks."""
        try:
            self._receive(w)
        except (EOFError, OSError):
            self.processes[w].join(CLOSE_TIMEOUT)
            raise RolloutError(
                f"rollout worker {w} exited while starting (exit code "
                f"{self.processes[w].exitcode}); a script that trains with "
                '``env.runner = "processes"`` needs ``if __name__ == "__main__":``'
            ) from None

    def _receive(self, w: int):
        """The worker's reply; RolloutError for an error it raised, EOFError if it died."""
        kind, value = self.pipes[w].recv()
        if kind == "error":
            raise RolloutError(f"rollout worker {w}: {value}")
        return value

    def _call(self, method: str, args: dict) -> dict:
        lost = set()
        for w, a in args.items():
            try:
                self.pipes[w].send((method, a))
            except OSError:
                lost.add(w)
        results = {}
        for w in args:
            if w not in lost:
                try:
                    results[w] = self._receive(w)
                except (EOFError, OSError):
                    lost.add(w)
        for w in sorted(lost):
            results[w] = self._replay(w, method, args[w])
        return results

    def _replay(self, w: int, method: str, args: tuple):
        """Restart a dead worker and repeat its call (after its play, from the same states)."""
        while True:
            self.restarts[w] += 1
            if self.restarts[w] > MAX_RESTARTS:
                code = self.processes[w].exitcode
                raise RolloutError(
                    f"rollout worker {w} died more than {MAX_RESTARTS} times (last exit code "
                    f"{code})"
                )
            self._stop(w)
            self._start(w)
            self._ready(w)
            try:
                replay = () if method == "play" else self._played[w]
                self.pipes[w].send((method, (*args, *replay)))
                return self._receive(w)
            except (EOFError, OSError):
                continue

    def _stop(self, w: int) -> None:
        process, pipe = self.processes[w], self.pipes[w]
        with contextlib.suppress(OSError):
            pipe.close()
        if process is not None and process.is_alive():
            process.kill()
        if process is not None:
            process.join(CLOSE_TIMEOUT)

    def close(self) -> None:
        for pipe in self.pipes:
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.send(None)
        deadline = time.monotonic() + CLOSE_TIMEOUT
        for process in self.processes:
            if process is not None:
                process.join(max(deadline - time.monotonic(), 0.0))
        for w in range(self.n_workers):
            if self.processes[w] is not None:
                self._stop(w)


def _serve(pipe, learner: int, cfg: Config, backend: str, n_envs: int) -> None:
    """A worker process: build a :class:`RolloutWorker`, then answer calls until told to stop
    (None) or the learner goes away. Ctrl-C is the learner's to handle."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_exit_without, args=(learner,), daemon=True).start()
    try:
        worker = RolloutWorker(cfg, backend, n_envs)
    except Exception as e:  # noqa: BLE001 - reported to the learner as one line
        with contextlib.suppress(OSError):
            pipe.send(("error", f"{type(e).__name__}: {e}"))
        return
    try:
        pipe.send(("ok", "ready"))
        while (call := pipe.recv()) is not None:
            method, args = call
            try:
                reply = ("ok", getattr(worker, method)(*args))
            except Exception as e:  # noqa: BLE001 - reported to the learner as one line
                reply = ("error", f"{method}: {type(e).__name__}: {e}")
            pipe.send(reply)
    except (EOFError, OSError):  # the learner is gone (or closed the pipe): nothing to say
        pass
    finally:
        worker.close()


def _exit_without(learner: int) -> None:
    """End this worker process once the learner is gone (its parent is the fork server, so
    Linux's parent-death signal cannot tell), checked every second."""
    while True:
        time.sleep(1.0)
        try:
            os.kill(learner, 0)
        except ProcessLookupError:
            os._exit(1)
        except PermissionError:  # alive, as another user: not ours, but alive
            pass


def make_runner(cfg: Config, backend: str, address: str | None = None):
    """The runner ``env.runner`` names, with its envs (and workers) started."""
    runner = cfg.env.runner
    if runner == "local":
        return LocalRunner(cfg, backend)
    if runner == "processes":
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        if cfg.env.num_workers > 4 * (cpus or 1):
            raise ConfigError(
                f"env.num_workers = {cfg.env.num_workers}: more than 4 processes per CPU of this "
                f"machine ({cpus})"
            )
        return ProcessRunner(cfg, backend)
    from pgrl.ray_runner import RayRunner

    return RayRunner(cfg, backend, address)
