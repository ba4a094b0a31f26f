"""Rollouts on Ray (``env.runner = "ray"``): a run's rollout workers as Ray actors.

The workers are :class:`pgrl.workers.RolloutWorker` (one CPU each), the same as the
``"processes"`` runner's; only the transport differs. The weights go into Ray's object store once
per update. Ray restarts an actor that dies and repeats the call it was in; a restarted actor has
lost its episodes, so every call after ``play`` carries play's arguments (object references,
resolved on the actor) to replay it, and the results are unchanged.
"""

from __future__ import annotations

from pgrl.config import Config, ConfigError
from pgrl.rollout import RolloutError
from pgrl.workers import MAX_RESTARTS, RemoteRunner, RolloutWorker


class RayRunner(RemoteRunner):
    """``env.num_workers`` :class:`RolloutWorker` actors of ``env.envs_per_worker`` slots."""

    def __init__(self, cfg: Config, backend: str, address: str | None = None):
        super().__init__(cfg, backend)
        from pgrl.ray_connect import connect

        self.ray = connect(address)
        cpus = self.ray.cluster_resources().get("CPU", 0)
        if self.n_workers > cpus:
            raise ConfigError(
                f"env.num_workers = {self.n_workers}: the Ray cluster has {cpus:g} CPUs, and each "
                "rollout worker takes one"
            )
        actor = self.ray.remote(
            num_cpus=1, max_restarts=MAX_RESTARTS, max_task_retries=MAX_RESTARTS
        )(RolloutWorker)
        self.workers = [actor.remote(cfg, backend, self.k) for _ in range(self.n_workers)]

    def _share(self, weights: dict):
        return self.ray.put(weights)

    def _call(self, method: str, args: dict) -> dict:
        from ray.exceptions import RayActorError

        replay = {w: () if method == "play" else self._played[w] for w in args}
        futures = [getattr(self.workers[w], method).remote(*a, *replay[w]) for w, a in args.items()]
        try:  # a worker that dies is restarted by Ray and repeats the same call
            return dict(zip(args, self.ray.get(futures), strict=True))
        except RayActorError as e:
            reason = str(e).splitlines()[0][:200]
            raise RolloutError(
                f"a rollout worker died more than {MAX_RESTARTS} times: {reason}"
            ) from None

    def close(self) -> None:
        for w in self.workers:
            self.ray.kill(w)
