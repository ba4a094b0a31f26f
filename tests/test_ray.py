"""pgrl sweep and pgrl compare on a real two-node Ray cluster (tests/ray_cluster.py): two network
namespaces, the worker node with a private view of the output directory, the driver in the
head's namespace. Trials run on both nodes, their files come back through Ray, a lost node's
trials resume from their checkpoints, and every result equals a local run's."""

import csv
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from ray_cluster import FAST_HEALTH_CHECK, RayCluster, skip_reason

from pgrl.config import load_config
from pgrl.reinforce import train
from pgrl.rundir import read_metrics

CARTPOLE = str(Path("configs/cartpole.toml").resolve())
GRID = ["--grid", "optimizer.learning_rate=3e-3,1e-2", "--seeds", "0", "1"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if reason := skip_reason():
        pytest.skip(reason)
    private = tmp_path_factory.mktemp("private")
    with RayCluster(nodes=2, private_dir=private, env=FAST_HEALTH_CHECK) as c:
        yield c


def _pgrl(cluster, *args, timeout=300, **kw):
    """``pgrl ARGS`` as a driver in the head's namespace (RAY_ADDRESS names the head)."""
    cmd = [sys.executable, "-m", "pgrl.cli", *args, "--executor", "ray"]
    return cluster.run_in_head(cmd, capture_output=True, text=True, timeout=timeout, **kw)


def _trials(out: Path) -> dict[str, dict]:
    with open(out / "trials.csv") as f:
        return {r["trial"]: r for r in csv.DictReader(f)}


def _local_returns(overrides: list[str], lr: str, seed: int, out: Path) -> np.ndarray:
    """The trial's run as plain ``pgrl train`` on this machine."""
    cfg = load_config(CARTPOLE, [*overrides, f"optimizer.learning_rate={lr}", f"train.seed={seed}"])
    cfg.log.progress = False
    train(cfg, out=out)
    return read_metrics(out / "metrics.csv")["return"]


def _assert_equals_local(out: Path, overrides: list[str], tmp_path: Path) -> None:
    for point, lr in (("p0", "3e-3"), ("p1", "1e-2")):
        for seed in (0, 1):
            name = f"{point}-numpy-seed{seed}"
            local = _local_returns(overrides, lr, seed, tmp_path / name)
            got = read_metrics(out / name / "metrics.csv")["return"]
            np.testing.assert_array_equal(got, local, err_msg=name)


def test_sweep_without_shared_storage_uses_both_nodes_and_brings_every_file_back(cluster, tmp_path):
    out = cluster.private_dir / "sweep"  # the worker node sees an empty tmpfs here
    overrides = ["train.episodes=300"]
    done = _pgrl(cluster, "sweep", CARTPOLE, *GRID, "--set", overrides[0], "--out", str(out))
    assert done.returncode == 0, done.stderr[-2000:]
    trials = _trials(out)
    assert len(trials) == 4 and all(r["status"] == "ok" for r in trials.values())
    assert {r["node"] for r in trials.values()} == set(cluster.node_ips)
    for name in trials:
        files = {p.name for p in (out / name).iterdir()}
        assert {
            "config.toml",
            "metrics.csv",
            "updates.csv",
            "summary.json",
            "checkpoint.npz",
        } <= files
    for name in ("sweep.csv", "sweep.md", "sweep.png", "best.toml"):
        assert (out / name).is_file()
    _assert_equals_local(out, overrides, tmp_path)


def test_a_lost_node_s_trials_resume_from_their_checkpoints_with_the_same_results(
    cluster, tmp_path
):
    out = cluster.private_dir / "sweep-kill"
    storage = cluster.shared_dir / "tune"
    overrides = ["train.episodes=1200", "train.checkpoint_every=5"]
    sets = [a for s in overrides for a in ("--set", s)]
    cmd = [sys.executable, "-m", "pgrl.cli", "sweep", CARTPOLE, *GRID, *sets, "--out", str(out)]
    cmd += ["--executor", "ray", "--storage", str(storage)]
    driver = subprocess.Popen(
        cluster.head_cmd(cmd),
        env=cluster.driver_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # both nodes are training once two trials have a checkpoint past their first update
    deadline = time.time() + 120
    while time.time() < deadline and driver.poll() is None:
        started = [d for d in out.glob("p*-seed*") if _rows(d / "metrics.csv") >= 100]
        if len(started) >= 2:
            break
        time.sleep(0.2)
    assert driver.poll() is None, "the sweep ended before the worker node could be killed"
    cluster.kill_worker_node()
    stdout, stderr = driver.communicate(timeout=300)
    assert driver.returncode == 0, stderr[-2000:]
    trials = _trials(out)
    assert all(r["status"] == "ok" for r in trials.values()), trials
    resumed = [r for r in trials.values() if r["resumed_from"]]
    assert resumed, "no trial was interrupted by the node loss"
    assert all(int(r["resumed_from"]) >= 100 and r["node"] == cluster.node_ips[0] for r in resumed)
    _assert_equals_local(out, overrides, tmp_path)
    cluster.start_worker()


def _rows(path: Path) -> int:
    try:
        return max(0, len(path.read_text().splitlines()) - 1)
    except OSError:
        return 0


def test_compare_on_ray_writes_the_local_executors_metrics(cluster, tmp_path):
    args = ["compare", CARTPOLE, "--seeds", "0", "--set", "train.episodes=200"]
    ray_out, local_out = cluster.private_dir / "compare", tmp_path / "local"
    done = _pgrl(cluster, *args, "--out", str(ray_out))
    assert done.returncode == 0, done.stderr[-2000:]
    local = subprocess.run(
        [sys.executable, "-m", "pgrl.cli", *args, "--out", str(local_out)],
        capture_output=True,
        text=True,
    )
    assert local.returncode == 0, local.stderr[-2000:]
    for run in ("numpy-seed0", "tensorflow-seed0"):
        a = read_metrics(ray_out / run / "metrics.csv")
        b = read_metrics(local_out / run / "metrics.csv")
        for column in ("episode", "steps", "return", "running_return", "length", "update"):
            np.testing.assert_array_equal(a[column], b[column], err_msg=f"{run} {column}")


def test_a_trial_that_fails_twice_is_a_row_with_its_error_and_the_others_are_kept(
    cluster, tmp_path
):
    import os
    import tempfile

    out = cluster.private_dir / "sweep-fail"
    sets = ["train.solved_mean100=100000", "train.checkpoint_every=1"]
    cmd = [sys.executable, "-m", "pgrl.cli", "sweep", CARTPOLE, "--seeds", "0"]
    cmd += ["--grid", "train.episodes=100,4000", "--backend", "numpy", "--out", str(out)]
    cmd += [*(a for s in sets for a in ("--set", s)), "--executor", "ray"]
    driver = subprocess.Popen(
        cluster.head_cmd(cmd),
        env=cluster.driver_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )

    def alive(pid: int) -> bool:
        try:
            os.kill(pid, 0)
            return True
        except OSError:
            return False

    # a trial trains in a temporary run directory whose .lock names its process: kill the long
    # trial's process, then the one that retries it
    killed, deadline = [], time.time() + 180
    while len(killed) < 2 and time.time() < deadline and driver.poll() is None:
        for lock in Path(tempfile.gettempdir()).glob("pgrl-p1-numpy-seed0-*/.lock"):
            text = lock.read_text().strip() if lock.is_file() else ""
            if text.isdigit() and int(text) not in killed and alive(int(text)):
                os.kill(int(text), 9)
                killed.append(int(text))
        time.sleep(0.1)
    _, stderr = driver.communicate(timeout=300)
    assert len(killed) == 2, stderr[-2000:]
    assert driver.returncode == 1, stderr[-2000:]
    trials = _trials(out)
    assert trials["p0-numpy-seed0"]["status"] == "ok"
    failed = trials["p1-numpy-seed0"]
    assert failed["status"] == "error" and failed["error"].startswith("failed twice"), failed
    assert "p1" in (out / "sweep.md").read_text()
