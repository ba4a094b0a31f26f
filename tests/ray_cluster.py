"""A one- or two-node Ray test cluster on this machine, isolated in network namespaces.

Layout (root only, Linux): namespaces ``<prefix>-head`` (10.213.7.1) and ``<prefix>-worker``
(10.213.7.2) joined by a veth pair; the /24 exists only inside them and there is no default
route, so Ray never uses 127.0.0.1 as a node address and nothing can leave the machine.
The worker's ``ray start`` runs under ``unshare --mount`` with a tmpfs over ``private_dir``,
so files a task writes there on the worker are invisible to the host and the head node.
``shared_dir`` is a plain directory both nodes see. Drivers must run inside the head
namespace: use :meth:`RayCluster.run_in_head`, which also sets RAY_ADDRESS.

    with RayCluster(nodes=2, private_dir=tmp / "out") as c:
        c.run_in_head([sys.executable, "driver.py"], check=True)

CLI: ``python tests/ray_cluster.py up|down|status`` (see scripts/test_cluster.sh).
"""

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SUBNET = "10.213.7"
PORT = 6379
BIN = Path(sys.executable).parent  # the venv's bin: python and the ray CLI
# Opt-in env for faster node-death detection (Ray's default takes about 16 s).
FAST_HEALTH_CHECK = {
    "RAY_health_check_period_ms": "500",
    "RAY_health_check_timeout_ms": "1000",
    "RAY_health_check_failure_threshold": "3",
}
_WAIT_NODES = """
import json, sys, time, ray
n, deadline = int(sys.argv[1]), time.time() + float(sys.argv[2])
ray.init(logging_level="ERROR", log_to_driver=False)
while True:
    alive = sorted(x["NodeManagerAddress"] for x in ray.nodes() if x["Alive"])
    if len(alive) == n or time.time() > deadline:
        break
    time.sleep(0.2)
print(json.dumps(alive))
"""


_WAIT_IDLE = """
import sys, time, ray
deadline = time.time() + float(sys.argv[1])
ray.init(logging_level="ERROR", log_to_driver=False)
total = ray.cluster_resources().get("CPU", 0)
while ray.available_resources().get("CPU", 0) < total and time.time() < deadline:
    time.sleep(0.2)
print(ray.available_resources().get("CPU", 0), total)
"""


def skip_reason(prefix: str = "pgrl") -> str | None:
    """Return why a namespaced cluster cannot be built here, or None if it can."""
    if not sys.platform.startswith("linux"):
        return "Ray test cluster needs Linux network namespaces"
    if os.geteuid() != 0:
        return "Ray test cluster needs root (ip netns, unshare, mount)"
    for tool in ("ip", "unshare"):
        if shutil.which(tool) is None:
            return f"Ray test cluster needs the '{tool}' command"
    if not (BIN / "ray").exists():
        return f"Ray test cluster needs the ray CLI in {BIN}"
    probe = f"{prefix}-probe-{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"Ray test cluster cannot create network namespaces: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def _run(*cmd, check: bool = True, **kw) -> subprocess.CompletedProcess:
    """Run a command quietly; on failure raise a one-line RuntimeError."""
    res = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    if check and res.returncode != 0:
        last = (res.stderr.strip() or res.stdout.strip() or "no output").splitlines()[-1]
        raise RuntimeError(f"{' '.join(map(str, cmd[:4]))} ... failed: {last}")
    return res


def _live_pids(ns: str) -> list[int]:
    """PIDs of the non-zombie processes in network namespace ``ns`` (none if it is gone)."""
    out = _run("ip", "netns", "pids", ns, check=False).stdout.split()
    pids = []
    for pid in map(int, out):
        try:
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                pids.append(pid)
        except (OSError, IndexError):
            pass
    return pids


def _kill_namespace(ns: str, grace: float) -> None:
    """SIGTERM every process in ``ns``, then SIGKILL what is left after ``grace`` seconds."""
    sig, deadline = (signal.SIGTERM if grace > 0 else signal.SIGKILL), time.time() + grace
    while pids := _live_pids(ns):
        if time.time() > deadline + 10:
            raise RuntimeError(f"processes {pids} in namespace {ns} survive SIGKILL")
        if time.time() > deadline:
            sig = signal.SIGKILL
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        time.sleep(0.1)


class RayCluster:
    """A Ray cluster of ``nodes`` (1 or 2) nodes with ``cpus_per_node`` CPUs each."""

    timeout = 60.0  # seconds to wait for nodes to come up (or for a killed one to go)
    object_store_mb = 512

    def __init__(self, nodes=2, private_dir=None, cpus_per_node=1, prefix="pgrl", env=None):
        if nodes not in (1, 2):
            raise ValueError(f"nodes must be 1 or 2, not {nodes}")
        self.nodes, self.cpus, self.prefix, self.env = nodes, cpus_per_node, prefix, dict(env or {})
        self.head_ns, self.worker_ns = f"{prefix}-head", f"{prefix}-worker"
        self.address = f"{SUBNET}.1:{PORT}"
        self.node_ips = [f"{SUBNET}.{i + 1}" for i in range(nodes)]
        self.state_file = Path(tempfile.gettempdir()) / f"{prefix}-cluster.json"
        self._private_arg, self.private_dir, self.base = private_dir, None, None

    @property
    def shared_dir(self) -> Path:
        """A directory both nodes (and the host) see; deleted by :meth:`down`."""
        return self.base / "shared"

    def info(self) -> dict:
        """Where everything is: address, node IPs, namespaces, directories."""
        d = {k: getattr(self, k) for k in ("nodes", "address", "node_ips", "head_ns", "worker_ns")}
        dirs = {
            "private_dir": self.private_dir,
            "base_dir": self.base,
            "shared_dir": self.shared_dir,
        }
        return d | {k: str(v) for k, v in dirs.items()}

    def up(self) -> dict:
        """Clean stale leftovers, build namespaces, start Ray, wait until all nodes are alive."""
        if self._private_arg:  # the worker still needs the venv, the repo and our base dir
            private = Path(self._private_arg).absolute()
            for needed in (Path(tempfile.gettempdir()), BIN, Path(__file__).parents[1]):
                if needed.absolute().is_relative_to(private):
                    raise ValueError(f"private_dir {private} would hide {needed}")
        self.down()
        self.base = Path(tempfile.mkdtemp(prefix=f"{self.prefix}-cluster-"))
        self.private_dir = Path(self._private_arg or self.base / "private").absolute()
        self.private_dir.mkdir(parents=True, exist_ok=True)
        self.shared_dir.mkdir()
        self.state_file.write_text(json.dumps(self.info()))
        try:
            self._make_network()
            self._ray_start("head", ["--head", f"--port={PORT}", "--include-dashboard=false"])
            if self.nodes == 2:
                self.start_worker()
            else:
                self.wait_nodes(1)
        except BaseException:
            self.down(keep_dirs=True)  # the error names a log file in base
            raise
        return self.info()

    def down(self, keep_dirs: bool = False) -> None:
        """Stop every process in both namespaces, delete them and the veth, remove the dirs.

        Idempotent; also removes leftovers of a crashed run found via the state file.
        The worker's tmpfs lives only in its mount namespace and vanishes with its processes.
        """
        bases = {self.base} if self.base else set()
        if self.state_file.exists():
            bases.add(Path(json.loads(self.state_file.read_text()).get("base_dir", "")))
        for ns in (self.worker_ns, self.head_ns):
            _kill_namespace(ns, grace=1.0)
            _run("ip", "netns", "del", ns, check=False)
        _run("ip", "link", "del", f"{self.prefix}-vh", check=False)
        for base in bases if not keep_dirs else ():
            if base.name.startswith(f"{self.prefix}-cluster-"):
                shutil.rmtree(base, ignore_errors=True)
        self.state_file.unlink(missing_ok=True)

    def __enter__(self) -> "RayCluster":
        self.up()
        return self

    def __exit__(self, *exc) -> None:
        self.down()

    def driver_env(self, extra=None) -> dict:
        """Environment for a driver in the head namespace (RAY_ADDRESS, venv on PATH)."""
        path = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"
        env = os.environ | {"RAY_USAGE_STATS_ENABLED": "0", "PATH": path}
        return env | {"RAY_ADDRESS": self.address} | dict(extra or {})

    def head_cmd(self, cmd) -> list[str]:
        """``cmd`` prefixed to run in the head namespace (for Popen with :meth:`driver_env`)."""
        return ["ip", "netns", "exec", self.head_ns, *map(str, cmd)]

    def run_in_head(self, cmd, env=None, **kw) -> subprocess.CompletedProcess:
        """``subprocess.run(cmd, **kw)`` inside the head namespace; ``env`` adds variables."""
        return subprocess.run(self.head_cmd(cmd), env=self.driver_env(env), **kw)

    def alive_nodes(self, n: int = 0, timeout: float = 0.0) -> list[str]:
        """IPs of alive nodes, polling up to ``timeout`` s until there are ``n`` of them."""
        cmd = [BIN / "python", "-c", _WAIT_NODES, n, timeout]
        res = self.run_in_head(cmd, capture_output=True, text=True, timeout=timeout + 60)
        if res.returncode != 0:
            last = (res.stderr.strip() or "no output").splitlines()[-1]
            raise RuntimeError(f"cannot query Ray at {self.address}: {last}")
        return json.loads(res.stdout.strip().splitlines()[-1])

    def wait_nodes(self, n: int) -> list[str]:
        """Wait until exactly ``n`` nodes are alive; raise a one-line error after the timeout."""
        alive = self.alive_nodes(n, self.timeout)
        if len(alive) != n:
            msg = f"{len(alive)}/{n} nodes alive after {self.timeout:.0f}s ({alive})"
            raise RuntimeError(f"Ray cluster: {msg}; logs under {self.base}")
        return alive

    def wait_idle(self) -> None:
        """Wait until every CPU of the cluster is free (the actors of a driver that ended go
        some time after it); raise a one-line error after the timeout."""
        cmd = [BIN / "python", "-c", _WAIT_IDLE, self.timeout]
        res = self.run_in_head(cmd, capture_output=True, text=True, timeout=self.timeout + 60)
        if res.returncode != 0:
            last = (res.stderr.strip() or "no output").splitlines()[-1]
            raise RuntimeError(f"cannot query Ray at {self.address}: {last}")
        free, total = map(float, res.stdout.split()[-2:])
        if free < total:
            raise RuntimeError(
                f"Ray cluster: {free:g}/{total:g} CPUs free after {self.timeout:.0f}s"
            )

    def kill_worker_node(self, wait: bool = True) -> float:
        """SIGKILL all worker-node processes (a node loss); optionally wait until Ray sees it.

        Returns seconds until the head reported one alive node (0 if not waited).
        """
        if self.nodes != 2:
            raise ValueError("kill_worker_node needs a two-node cluster")
        t0 = time.time()
        _kill_namespace(self.worker_ns, grace=0)
        if wait:
            self.wait_nodes(1)
        return time.time() - t0 if wait else 0.0

    def start_worker(self) -> None:
        """(Re)start the worker node (tmpfs over private_dir, fresh) and wait for both nodes."""
        mount = 'mount -t tmpfs -o size=256m pgrl-private "$0" && exec "$@"'
        wrap = ["unshare", "--mount", "--propagation", "private", "sh", "-c", mount]
        self._ray_start("worker", [f"--address={self.address}"], [*wrap, self.private_dir])
        self.wait_nodes(2)

    def _make_network(self) -> None:
        """Two namespaces, a veth pair between them, addresses, lo up; no default route."""
        vh, vw = f"{self.prefix}-vh", f"{self.prefix}-vw"
        _run("ip", "netns", "add", self.head_ns)
        _run("ip", "netns", "add", self.worker_ns)
        _run("ip", "link", "add", vh, "type", "veth", "peer", "name", vw)
        for ns, dev, ip in ((self.head_ns, vh, 1), (self.worker_ns, vw, 2)):
            _run("ip", "link", "set", dev, "netns", ns)
            _run("ip", "-n", ns, "addr", "add", f"{SUBNET}.{ip}/24", "dev", dev)
            _run("ip", "-n", ns, "link", "set", dev, "up")
            _run("ip", "-n", ns, "link", "set", "lo", "up")

    def _ray_start(self, role: str, args: list, wrap=()) -> None:
        """``ray start`` for ``role`` in its namespace with its own --temp-dir; log in base."""
        ns, ip = (self.head_ns, 1) if role == "head" else (self.worker_ns, 2)
        flags = [f"--node-ip-address={SUBNET}.{ip}", f"--num-cpus={self.cpus}"]
        flags += [f"--object-store-memory={self.object_store_mb * 2**20}", "--disable-usage-stats"]
        flags += [f"--temp-dir={self.base / f'ray-{role}'}"]  # per node: no shared /tmp/ray
        cmd = ["ip", "netns", "exec", ns, *wrap, BIN / "ray", "start", *args, *flags]
        env = os.environ | {"RAY_USAGE_STATS_ENABLED": "0"} | self.env
        env.pop("RAY_ADDRESS", None)
        log = self.base / f"{role}.log"
        with open(log, "w") as out:
            code = subprocess.run(list(map(str, cmd)), stdout=out, stderr=out, env=env).returncode
        if code != 0:
            last = (log.read_text().strip() or "no output").splitlines()[-1]
            raise RuntimeError(f"ray start ({role}) failed: {last} (see {log})")


def up(nodes=2, private_dir=None, cpus_per_node=1, prefix="pgrl") -> dict:
    """Bring a cluster up (replacing any with this prefix) and return its info."""
    return RayCluster(nodes, private_dir, cpus_per_node, prefix).up()


def down(prefix="pgrl") -> None:
    """Tear down the cluster with this prefix, whichever process started it."""
    RayCluster(prefix=prefix).down()


def main(argv=None) -> int:
    """CLI: up | down | status for a cluster built by hand (state kept in a temp file)."""
    p = argparse.ArgumentParser(prog="ray_cluster", description=__doc__.splitlines()[0])
    p.add_argument("action", choices=["up", "down", "status"])
    p.add_argument("--nodes", type=int, default=2)
    p.add_argument("--cpus-per-node", type=int, default=None)
    p.add_argument("--private-dir", default=None)
    p.add_argument("--prefix", default="pgrl")
    a = p.parse_args(argv)
    cpus = a.cpus_per_node or (1 if a.nodes == 2 else 2)
    if a.action != "down" and (reason := skip_reason(a.prefix)):
        raise RuntimeError(reason)
    c, t0 = RayCluster(a.nodes, a.private_dir, cpus, a.prefix), time.time()
    if a.action == "up":
        print(json.dumps(c.up() | {"seconds": round(time.time() - t0, 1)}, indent=1))
        print(f"drivers: ip netns exec {c.head_ns} env RAY_ADDRESS={c.address} python ...")
    elif a.action == "down":
        down(a.prefix)
        print(f"down in {time.time() - t0:.1f}s")
    elif not c.state_file.exists():
        print("down")
    else:
        info = json.loads(c.state_file.read_text())
        print(json.dumps(info | {"alive": c.alive_nodes()}, indent=1))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (RuntimeError, ValueError) as e:
        sys.exit(f"error: {e}")
