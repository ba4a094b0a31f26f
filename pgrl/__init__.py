"""pgrl: policy gradients (REINFORCE, PPO) with interchangeable NumPy and TensorFlow backends.

``import pgrl`` loads nothing heavy (no NumPy, no TensorFlow): the names below are imported on
first access through the module ``__getattr__``, so the ``pgrl`` command starts at once and a
Ctrl-C during its start-up is caught by :func:`pgrl.cli.main`.
"""

from importlib import import_module as _import_module

# public name -> the module that defines it
_LAZY = {
    "load_config": "pgrl.config",
    "RMSprop": "pgrl.optim",
    "make_policy": "pgrl.policies",
    "make_value_net": "pgrl.policies",
    "discount_rewards": "pgrl.returns",
    "standardize": "pgrl.returns",
    "gae": "pgrl.returns",
}

__all__ = [*_LAZY, "__version__", "load_policy", "train"]


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
    from pgrl.config import load_config
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


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(_import_module(_LAZY[name]), name)
    elif name == "__version__":
        from importlib import metadata

        try:
            value = metadata.version("pgrl")  # pyproject.toml's version, as installed
        except metadata.PackageNotFoundError:  # a source tree put on sys.path, not installed
            value = "0+unknown"
    else:
        raise AttributeError(f"module 'pgrl' has no attribute {name!r}")
    globals()[name] = value  # looked up once
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
