"""pgrl: REINFORCE policy gradients with interchangeable NumPy and TensorFlow backends.

``import pgrl`` loads NumPy only; TensorFlow is imported when its backend is first used.
"""

from pgrl.config import load_config
from pgrl.optim import RMSprop
from pgrl.policies import make_policy
from pgrl.returns import discount_rewards, standardize

__version__ = "0.1.0"

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


def train(config, out=None, resume: bool = False, backend: str | None = None) -> dict:
    """Train from a :class:`pgrl.config.Config` (or a TOML path); returns the run's summary."""
    from pgrl.trainer import train as _train

    if not hasattr(config, "train"):
        config = load_config(config)
    return _train(config, out=out, resume=resume, backend=backend)


def load_policy(source, backend: str | None = None):
    """A trained policy from a checkpoint, a weights file or a shipped name (``"pong"``)."""
    from pgrl.trainer import load_policy as _load_policy

    return _load_policy(source, backend=backend)
