"""pgrl: REINFORCE policy gradients with interchangeable NumPy and TensorFlow backends.

``import pgrl`` never loads TensorFlow: it is imported when its backend is first used.
"""

from importlib import metadata as _metadata

from pgrl.config import load_config
from pgrl.optim import RMSprop
from pgrl.policies import make_policy
from pgrl.returns import discount_rewards, standardize

try:
    __version__ = _metadata.version("pgrl")  # pyproject.toml's version, as installed
except _metadata.PackageNotFoundError:  # a source tree put on sys.path without installing it
    __version__ = "0+unknown"

__all__ = [
    "RMSprop",
    "__version__",
    "discount_rewards",
    "load_config",
    "load_policy",
    "make_policy",
    "standardize",
    "train",
]


def train(
    config,
    out=None,
    resume: bool = False,
    backend: str | None = None,
    overwrite: bool = False,
    allow_changes: bool = False,
) -> dict:
    """Train from a :class:`pgrl.config.Config`, a TOML path or a shipped config name
    (``"cartpole"``); returns the run's summary. See :func:`pgrl.reinforce.train`."""
    from pgrl.reinforce import train as _train

    if not hasattr(config, "train"):
        config = load_config(config)
    return _train(
        config,
        out=out,
        resume=resume,
        backend=backend,
        overwrite=overwrite,
        allow_changes=allow_changes,
    )


def load_policy(source, backend: str | None = None):
    """A trained policy from a checkpoint, a weights file or a shipped name (``"pong"``)."""
    from pgrl.play import load_policy as _load_policy

    return _load_policy(source, backend=backend)
