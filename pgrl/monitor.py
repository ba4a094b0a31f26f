"""Watching a run: a tqdm bar, TensorBoard scalars, and Ctrl-C held while an update completes."""

from __future__ import annotations

import signal
import socket
import threading
import time
from pathlib import Path

from pgrl.config import ConfigError


class ProgressBar:
    """A tqdm bar over the episode budget, with running return, mean100 and env steps/s."""

    def __init__(self, total: int, initial: int, desc: str, enabled: bool = True):
        from tqdm.auto import tqdm

        self.bar = tqdm(
            total=total,
            initial=initial,
            unit="ep",
            dynamic_ncols=True,
            desc=desc,
            disable=not enabled,
        )

    def update(
        self,
        episodes: int,
        running_return: float,
        mean100: float,
        sps: float,
        timing: dict | None = None,
        explained_variance: float | None = None,
    ) -> None:
        """``timing`` (seconds per part of the update) is shown only for remote rollouts, the
        ones with a ``broadcast`` part."""
        self.bar.update(episodes)
        remote = timing and "broadcast" in timing
        shown = {k: f"{v:.2f}s" for k, v in timing.items()} if remote else {}
        if explained_variance is not None:
            shown["ev"] = f"{explained_variance:.2f}"
        self.bar.set_postfix(
            running=f"{running_return:.2f}",
            mean100=f"{mean100:.1f}",
            sps=f"{sps:.0f}",
            **shown,
            refresh=False,
        )

    def close(self) -> None:
        self.bar.close()


class TensorBoard:
    """Scalars in TensorBoard's event files, one point per update; needs ``tensorboard`` only,
    not TensorFlow."""

    @staticmethod
    def check_installed() -> None:
        try:
            import tensorboard.compat.proto.event_pb2  # noqa: F401
        except ImportError:
            raise ConfigError(
                "log.tensorboard = true needs TensorBoard: install pgrl[tensorboard]"
            ) from None

    def __init__(self, logdir: Path):
        self.check_installed()
        from tensorboard.compat.proto import event_pb2, summary_pb2
        from tensorboard.summary.writer.record_writer import RecordWriter

        self._event, self._summary = event_pb2.Event, summary_pb2.Summary
        logdir.mkdir(parents=True, exist_ok=True)
        name = f"events.out.tfevents.{time.time():.0f}.{socket.gethostname()}.pgrl"
        self._file = open(logdir / name, "wb")
        self._writer = RecordWriter(self._file)
        self._write(file_version="brain.Event:2")

    def _write(self, **event) -> None:
        self._writer.write(self._event(wall_time=time.time(), **event).SerializeToString())
        self._file.flush()

    def write(self, step: int, scalars: dict[str, float]) -> None:
        values = [self._summary.Value(tag=k, simple_value=float(v)) for k, v in scalars.items()]
        self._write(step=step, summary=self._summary(value=values))

    def close(self) -> None:
        self._file.close()


class HoldInterrupts:
    """Inside ``with hold:``, SIGINT is held and raised as KeyboardInterrupt when the block ends;
    outside, it raises at once (the default). Only the main thread can own signal handlers, so
    elsewhere this does nothing."""

    inside = pending = False
    previous = None

    def install(self) -> HoldInterrupts:
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def uninstall(self) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
            self.previous = None

    def _handler(self, signum, frame):
        if self.inside:
            self.pending = True
        else:
            raise KeyboardInterrupt

    def __enter__(self):
        self.inside = True
        return self

    def __exit__(self, exc_type, exc, tb):
        self.inside = False
        pending, self.pending = self.pending, False
        if pending and exc_type is None:  # with another exception, that one propagates
            raise KeyboardInterrupt
