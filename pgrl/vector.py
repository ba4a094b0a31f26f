"""A lean worker-process vector env: one process per sub-env, shared memory, 1-byte messages.

gymnasium's ``AsyncVectorEnv`` keeps observations in shared memory but sends each step's actions,
rewards, flags and infos pickled through its pipes; with the policy in the loop, 2 Pong envs in
it step slower than 1 env in one process (``python scripts/bench.py rollout``).
:class:`WorkerVectorEnv` keeps all data in shared memory (each worker writes only its own row)
and sends one byte per command each way, with plain ``os.write``/``os.read`` on the pipe
(``Connection.send_bytes``/``recv_bytes`` add Python framing to every call; the framed
calls carry only an error's traceback):

    parent                                 worker i
    actions[i] = a_i  (shared memory)
    b"s"                           ---->   obs, r, term, trunc, _ = env.step(actions[i])
                                           obs_row[i], rewards[i], ... = obs, r, ...
    wait for the reply             <----   b"k" (or b"e", then the formatted traceback)

Lockstep: a step goes to every worker before the parent waits for any, so the envs step in
parallel, and every vector step waits for all of them. Infos are not forwarded. Autoreset is
disabled: a finished env is reset by the caller, ``reset(options={"reset_mask": done})``.

Waiting: a process that waits blocks in ``os.read`` (no polling); its CPU is free meanwhile.

Env 0 in the parent (``local_first=True``): the parent steps sub-env 0 itself while the workers
step the others, instead of sleeping until they reply. With 2 envs on 2 cores that is one
process per core and one handoff per step instead of two; a woken worker's start-up delay then
overlaps with the parent's own env step.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import traceback
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

__all__ = ["WorkerVectorEnv"]

# One-byte commands (parent -> worker) and replies (worker -> parent).
_STEP, _RESET, _CLOSE = b"s", b"r", b"c"
_OK, _ERROR = b"k", b"e"
# Seconds close() waits for the workers, together, before terminating the stragglers.
CLOSE_TIMEOUT = 5.0


class WorkerVectorEnv(VectorEnv):
    """``num_envs`` envs, each in its own (daemon) worker process, stepped in lockstep.

    Observations, rewards, flags, actions and seeds live in shared memory; the pipes carry one
    byte per command. Autoreset is disabled (``metadata["autoreset_mode"]``): after an episode
    ends, reset the env with ``reset(options={"reset_mask": mask})`` before stepping it again.
    Infos are not forwarded. The caller closes it (``close()`` is idempotent). POSIX only.

    Args:
        env_fns: zero-argument callables, one per sub-env, each returning a gymnasium env with a
            Box observation space and a Discrete action space (picklable, e.g.
            ``functools.partial(make_env, env_id, seed=s)``, for the ``spawn`` start method).
        context: ``multiprocessing`` start method (``"fork"``, ``"spawn"``, ``"forkserver"``;
            ``None``: the platform's default).
        local_first: step sub-env 0 in this process, between sending the workers their
            commands and waiting for them (see the module docstring).

    Raises:
        ValueError: no env_fns, an env whose spaces are not Box observations and Discrete
            actions, or not a POSIX system.
        RuntimeError: a worker could not build its env (the message names the worker and the
            error).
    """

    def __init__(
        self,
        env_fns: Sequence[Callable[[], Any]],
        context: str | None = None,
        local_first: bool = False,
    ):
        self.closed = True  # until the workers run: close() and __del__ have nothing to do
        self._processes: list = []
        self._conns: list = []
        self._fds: list[int] = []
        self._local = None  # sub-env 0 when local_first
        if os.name != "posix":
            raise ValueError(
                f"WorkerVectorEnv needs a POSIX system (os.read on pipes), not {os.name}"
            )
        env_fns = list(env_fns)
        if len(env_fns) < 1:
            raise ValueError(f"WorkerVectorEnv needs at least 1 env_fn, got {len(env_fns)}")
        dummy = env_fns[0]()
        obs_space, action_space = dummy.observation_space, dummy.action_space
        self.metadata = {**dummy.metadata, "autoreset_mode": AutoresetMode.DISABLED}
        self.render_mode = dummy.render_mode
        self.spec = dummy.spec
        bad = None
        if not isinstance(obs_space, spaces.Box):
            bad = f"WorkerVectorEnv needs Box observations, got {obs_space}"
        elif not isinstance(action_space, spaces.Discrete):
            bad = f"WorkerVectorEnv needs Discrete actions, got {action_space}"
        if local_first and bad is None:
            self._local = dummy  # sub-env 0 stays here
        else:
            dummy.close()
        if bad is not None:
            raise ValueError(bad)

        self.num_envs = n = len(env_fns)
        self.single_observation_space = obs_space
        self.single_action_space = action_space
        self.observation_space = batch_space(obs_space, n)
        self.action_space = batch_space(action_space, n)

        ctx = mp.get_context(context)
        self._share(ctx, obs_space)
        self._first_worker = 1 if local_first else 0
        self.closed = False
        try:
            for i, env_fn in enumerate(env_fns):
                self._start_worker(ctx, i, env_fn, obs_space)
            error = self._wait(range(self._first_worker, n), "build its env")
        except BaseException:
            self.close()
            raise
        if error is not None:
            self.close()
            raise error

    def _share(self, ctx, obs_space: spaces.Box) -> None:
        """The shared memory: raw bytes, viewed with NumPy here and in the workers; no locks,
        each worker owns a row."""
        n, obs_dtype = self.num_envs, np.dtype(obs_space.dtype)
        self._shared = shared = {
            "obs": ctx.RawArray("B", n * obs_dtype.itemsize * int(np.prod(obs_space.shape))),
            "rewards": ctx.RawArray("d", n),
            "terminated": ctx.RawArray("B", n),
            "truncated": ctx.RawArray("B", n),
            "actions": ctx.RawArray("q", n),
            "seeds": ctx.RawArray("q", n),
            "has_seed": ctx.RawArray("B", n),
        }
        self._obs = np.frombuffer(shared["obs"], dtype=obs_dtype).reshape(n, *obs_space.shape)
        self._rewards = np.frombuffer(shared["rewards"], dtype=np.float64)
        self._terminated = np.frombuffer(shared["terminated"], dtype=np.bool_)
        self._truncated = np.frombuffer(shared["truncated"], dtype=np.bool_)
        self._actions = np.frombuffer(shared["actions"], dtype=np.int64)
        self._seeds = np.frombuffer(shared["seeds"], dtype=np.int64)
        self._has_seed = np.frombuffer(shared["has_seed"], dtype=np.bool_)

    def _start_worker(self, ctx, i: int, env_fn, obs_space: spaces.Box) -> None:
        """Start worker ``i`` (nothing for sub-env 0 when it steps in this process)."""
        if i < self._first_worker:
            self._processes.append(None)
            self._conns.append(None)
            self._fds.append(-1)
            return
        parent_conn, child_conn = ctx.Pipe()
        process = ctx.Process(
            target=_worker,
            name=f"WorkerVectorEnv-{i}",
            args=(i, env_fn, child_conn, parent_conn, obs_space, self._shared),
            daemon=True,
        )
        process.start()
        child_conn.close()  # the worker holds the only copy: its death means EOF here
        self._processes.append(process)
        self._conns.append(parent_conn)
        self._fds.append(parent_conn.fileno())

    def step(
        self, actions: Sequence[int] | np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
        """Step every sub-env once with its action.

        Args:
            actions: (num_envs,) integer actions.

        Returns:
            ``(obs, rewards, terminated, truncated, {})``: obs (num_envs, *obs_shape) is the
            shared buffer itself, overwritten by the next step or reset (copy it to keep it);
            rewards (float64), terminated and truncated (bool) are (num_envs,) copies. Infos
            are not forwarded: the dict is always empty.

        Raises:
            ValueError: not ``num_envs`` actions.
            RuntimeError: an env raised (the message names the worker and the error), or a
                worker died.
        """
        if len(actions) != self.num_envs:
            raise ValueError(f"step needs {self.num_envs} actions, one per env, got {len(actions)}")
        self._actions[:] = actions
        self._command(_STEP, range(self.num_envs), "step")
        return (
            self._obs,
            self._rewards.copy(),
            self._terminated.copy(),
            self._truncated.copy(),
            {},
        )

    def reset(
        self,
        *,
        seed: int | Sequence[int | None] | None = None,
        options: dict[str, Any] | None = None,
    ) -> tuple[np.ndarray, dict]:
        """Reset every sub-env, or only those in ``options["reset_mask"]``.

        Args:
            seed: ``None`` (each env continues its RNG stream), an int (sub-env ``i`` gets
                ``seed + i``) or a list of ``num_envs`` ints or ``None``.
            options: only ``{"reset_mask": mask}``, a (num_envs,) bool array: the envs to reset;
                the others keep their observation rows.

        Returns:
            ``(obs, {})``, obs being the shared buffer (see :meth:`step`).

        Raises:
            ValueError: a bad seed, option or mask.
            RuntimeError: an env raised, or a worker died.
        """
        n = self.num_envs
        if seed is None:
            seeds = [None] * n
        elif isinstance(seed, int | np.integer) and not isinstance(seed, bool):
            seeds = [int(seed) + i for i in range(n)]
        else:
            seeds = list(seed)
            if len(seeds) != n or not all(
                s is None or (isinstance(s, int | np.integer) and not isinstance(s, bool))
                for s in seeds
            ):
                raise ValueError(f"seed must be None, an int or {n} ints or None, got {seed!r}")
        indices = range(n)
        options = dict(options or {})
        if "reset_mask" in options:
            mask = np.asarray(options.pop("reset_mask"))
            if mask.shape != (n,) or mask.dtype != np.bool_:
                raise ValueError(f"options['reset_mask'] must be a ({n},) bool array, got {mask!r}")
            indices = np.flatnonzero(mask).tolist()
        if options:
            raise ValueError(f"reset takes only the option 'reset_mask', got {sorted(options)}")
        for i in indices:
            self._has_seed[i] = seeds[i] is not None
            self._seeds[i] = 0 if seeds[i] is None else seeds[i]
        self._command(_RESET, indices, "reset")
        return self._obs, {}

    def close_extras(self, **kwargs: Any) -> None:
        """Ask every worker to close its env and exit; terminate those that do not in time."""
        local, self._local = self._local, None
        try:
            if local is not None:
                local.close()
        finally:
            self._close_workers()

    def _close_workers(self) -> None:
        for fd in self._fds:
            if fd < 0:
                continue
            try:
                os.write(fd, _CLOSE)
            except OSError:
                pass  # already dead
        timeout = CLOSE_TIMEOUT
        for process in self._processes:
            if process is None:
                continue
            process.join(timeout)
            if process.is_alive():
                process.terminate()
                process.join(1.0)
            timeout = 0.1
        for conn in self._conns:
            if conn is not None:
                conn.close()
        self._processes, self._conns, self._fds = [], [], []

    def __del__(self):
        if not self.__dict__.get("closed", True):
            self.close()

    def _command(self, code: bytes, indices, what: str) -> None:
        """Send ``code`` to the workers ``indices`` all at once, then wait for each in order."""
        if self.closed:
            raise RuntimeError(f"WorkerVectorEnv.{what} called after close()")
        write, fds = os.write, self._fds
        local = self._local is not None and 0 in indices
        workers = [i for i in indices if i >= self._first_worker]
        try:
            # Last to first: the parent waits for worker 0 first, so the others get their
            # command before a woken worker 0 can take this CPU.
            for i in reversed(workers):
                try:
                    write(fds[i], code)
                except OSError:
                    self._died(i, what)
            error = self._run_local(code) if local else None
            worker_error = self._wait(workers, what)
            error = error or worker_error
        except BaseException:
            self.close()  # e.g. Ctrl-C: a reply may be unread, the workers are out of step
            raise
        if error is not None:
            raise error

    def _run_local(self, code: bytes) -> Exception | None:
        """Run ``code`` on sub-env 0, in this process; an error is returned, as a worker's."""
        env = self._local
        try:
            if code == _STEP:
                obs, self._rewards[0], term, trunc, _ = env.step(int(self._actions[0]))
                self._terminated[0], self._truncated[0] = bool(term), bool(trunc)
            else:
                obs, _ = env.reset(seed=int(self._seeds[0]) if self._has_seed[0] else None)
                self._terminated[0] = self._truncated[0] = False
            self._obs[0] = obs
        except Exception as e:
            error = RuntimeError(f"WorkerVectorEnv env 0 (in this process) failed: {e!r}")
            error.__cause__ = e
            return error
        return None

    def _wait(self, indices, what: str) -> RuntimeError | None:
        """One reply from each worker in ``indices``; the first error, after all replied."""
        error = None
        read, fds = os.read, self._fds
        for i in indices:
            try:
                reply = read(fds[i], 1)
            except OSError:
                reply = b""
            if not reply:
                self._died(i, what)
            if reply == _ERROR:
                try:
                    remote = self._conns[i].recv_bytes().decode(errors="replace").rstrip()
                except (EOFError, OSError):
                    self._died(i, what)
                if error is None:
                    last = remote.splitlines()[-1] if remote else "unknown error"
                    error = RuntimeError(f"WorkerVectorEnv worker {i} failed to {what}: {last}")
                    error.add_note(f"worker {i}'s traceback:\n{remote}")
        return error

    def _died(self, i: int, what: str):
        process = self._processes[i]
        process.join(0.5)
        code = process.exitcode
        self.close()
        raise RuntimeError(
            f"WorkerVectorEnv worker {i} died during {what} (exit code {code}); "
            "all workers are closed"
        )


def _worker(i, env_fn, conn, parent_conn, obs_space, shared) -> None:
    """Worker ``i``: build the env, then serve 1-byte commands until close or EOF."""
    # Ctrl-C goes to the whole process group: the parent decides, and closes us.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent_conn.close()
    fd, read, write = conn.fileno(), os.read, os.write
    try:
        env = env_fn()
        space = env.observation_space
        if (space.shape, space.dtype) != (obs_space.shape, obs_space.dtype):
            env.close()
            raise ValueError(f"env {i} has observations {space}, env 0 has {obs_space}")
    except BaseException:
        write(fd, _ERROR)
        conn.send_bytes(traceback.format_exc().encode())
        return
    obs_row = np.frombuffer(shared["obs"], obs_space.dtype).reshape(-1, *obs_space.shape)[i]
    # ctypes arrays: indexing them is cheaper than NumPy scalars, and gives Python numbers.
    rewards, terminated, truncated = shared["rewards"], shared["terminated"], shared["truncated"]
    actions, seeds, has_seed = shared["actions"], shared["seeds"], shared["has_seed"]
    step, reset = env.step, env.reset
    write(fd, _OK)
    try:
        while True:
            code = read(fd, 1)
            if not code:
                break  # the parent is gone
            try:
                if code == _STEP:
                    obs_row[:], rewards[i], term, trunc, _ = step(actions[i])
                    terminated[i], truncated[i] = bool(term), bool(trunc)
                elif code == _RESET:
                    obs_row[:], _ = reset(seed=seeds[i] if has_seed[i] else None)
                    terminated[i] = truncated[i] = False
                elif code == _CLOSE:
                    break
                else:
                    raise RuntimeError(f"unknown command {code!r}")
            except Exception:
                write(fd, _ERROR)
                conn.send_bytes(traceback.format_exc().encode())
            else:
                write(fd, _OK)
    except OSError:
        pass  # the parent is gone
    finally:
        env.close()
