"""Reaching a Ray cluster: Ray imported on demand, the head's address checked before Ray starts,
and ``ray.init`` with pgrl's settings (for sweeps, comparisons and rollout workers alike)."""

from __future__ import annotations

import os
import socket

from pgrl.config import ConfigError


def import_ray():
    """Ray and Ray Tune, or a one-line error saying how to install them."""
    try:
        import ray
        from ray import tune
    except ImportError:
        raise ConfigError("--executor ray needs Ray: pip install 'pgrl[ray]'") from None
    return ray, tune


def check_address(address: str) -> None:
    """A one-line error, before Ray is started, when nothing listens at ``host:port``."""
    if address.startswith(("ray://", "auto")) or address == "local":
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(
            f"--address {address}: expected HOST:PORT of a Ray head, e.g. 10.0.0.1:6379"
        )
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5.0).close()
    except OSError as e:
        raise ConfigError(
            f"--address {address}: cannot reach a Ray head there ({e.strerror or e})"
        ) from None


def connect(address: str | None):
    """``ray.init`` at ``address`` (else ``RAY_ADDRESS``, else a new local Ray instance)."""
    ray, _ = import_ray()
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address:
        check_address(address)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("TUNE_DISABLE_SIGINT_HANDLER", "1")  # Ctrl-C stops the sweep at once
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    ray.init(
        address=address,
        logging_level="ERROR",
        log_to_driver=False,
        include_dashboard=False,
        configure_logging=True,
        ignore_reinit_error=True,
    )
    return ray
