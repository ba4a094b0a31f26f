"""Trained policies shipped with pgrl, as weights files (see :mod:`pgrl.checkpoint`).

``pgrl eval pong`` and ``pgrl.load_policy("pong")`` find them by short name.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

# short name -> file in this package
NAMES = {"pong": "pong.npz"}


def resolve(source: str | Path) -> Path:
    """An existing file as given (a run directory: its checkpoint), else the shipped file a short
    name stands for; FileNotFoundError listing the names."""
    path = Path(source)
    if path.is_file():
        return path
    if path.is_dir() and (path / "checkpoint.npz").is_file():
        return path / "checkpoint.npz"
    name = str(source)
    if name in NAMES:
        shipped = Path(str(resources.files(__name__).joinpath(NAMES[name])))
        if shipped.is_file():
            return shipped
        raise FileNotFoundError(f"the pretrained {name!r} policy is missing from {shipped.parent}")
    raise FileNotFoundError(
        f"{source}: no such file, and not a pretrained policy name ({', '.join(sorted(NAMES))})"
    )
