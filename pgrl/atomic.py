"""Files written whole or not at all: every file pgrl writes goes through :func:`write_atomic`.

The exceptions are append-only logs (a run's CSV rows, TensorBoard events): a cut-short append
is cut back or dropped by whoever reads the log next.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def write_atomic(path: str | Path, content: bytes | str | Callable[[BinaryIO], object]) -> None:
    """Write bytes, UTF-8 text or ``content(f)`` (a callback writing the binary file ``f``)
    through a fsynced temp file renamed over ``path``; on any failure the temp file goes."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "xb") as f:
            if callable(content):
                content(f)
            else:
                f.write(content.encode() if isinstance(content, str) else content)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    with contextlib.suppress(OSError):  # some filesystems cannot fsync a directory
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)  # makes the rename itself durable
        finally:
            os.close(fd)


def remove_temp_files(directory: Path) -> None:
    """Temp files that :func:`write_atomic` left behind when its process was killed."""
    for stale in directory.glob(".*.tmp"):
        stale.unlink(missing_ok=True)
