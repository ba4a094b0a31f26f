"""pgrl sweep and pgrl compare on a real two-node Ray cluster (tests/ray_cluster.py): two network
namespaces, the worker node with a private view of the output directory, the driver in the
head's namespace. Trials run on both nodes, their configs and initial weights go out and their
results come back through Ray, a lost node's trials resume from their checkpoints, every result
equals a local run's, and a killed trial leaves no directory behind. Without a cluster: what the
driver reads for the trials, and the trial directories' cleanup."""

import csv
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from ray_cluster import FAST_HEALTH_CHECK, RayCluster, skip_reason

import pgrl.ray_executor
from pgrl.checkpoint import read_init
from pgrl.config import Config, ConfigError, load_config
from pgrl.executor import read_inits
from pgrl.ray_executor import TRIALS_DIR, remove_stale_trial_dirs, trial_directory
from pgrl.reinforce import train
from pgrl.rundir import read_metrics

REPO = Path(__file__).resolve().parents[1]
CARTPOLE = str(REPO / "configs" / "cartpole.toml")
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

    # a trial trains in a run directory whose .lock names its process: end the long trial's
    # process with SIGTERM, then the one that retries it with SIGKILL
    killed, dirs, deadline = [], [], time.time() + 180
    while len(killed) < 2 and time.time() < deadline and driver.poll() is None:
        for lock in TRIALS_DIR.glob("p1-numpy-seed0-*/run/.lock"):
            text = lock.read_text().strip() if lock.is_file() else ""
            if text.isdigit() and int(text) not in killed and alive(int(text)):
                os.kill(int(text), (signal.SIGTERM, signal.SIGKILL)[len(killed)])
                killed.append(int(text))
                dirs.append(lock.parent.parent)
        time.sleep(0.1)
    _, stderr = driver.communicate(timeout=300)
    assert len(killed) == 2, stderr[-2000:]
    assert driver.returncode == 1, stderr[-2000:]
    trials = _trials(out)
    assert trials["p0-numpy-seed0"]["status"] == "ok"
    failed = trials["p1-numpy-seed0"]
    assert failed["status"] == "error" and failed["error"].startswith("failed twice"), failed
    assert "p1" in (out / "sweep.md").read_text()
    # gone once the killed processes are: SIGTERM's exits on its own time, after the sweep's end
    deadline = time.time() + 30
    while any(d.exists() for d in dirs) and time.time() < deadline:
        time.sleep(0.2)
    assert not any(d.exists() for d in dirs), "a killed trial's directory was left behind"


def _docs_ray_commands() -> list[list[str]]:
    """The ``pgrl ... --executor ray`` commands of docs/cluster.md's first bash block."""
    block = (REPO / "docs" / "cluster.md").read_text().split("```bash\n", 1)[1].split("```")[0]
    commands = [shlex.split(line, comments=True) for line in block.replace("\\\n", " ").split("\n")]
    return [c for c in commands if c[:1] == ["pgrl"] and "--executor ray" in shlex.join(c)]


@pytest.fixture
def project(cluster, request):
    """A working directory holding configs/, where the worker node sees an empty tmpfs; the
    cluster idle, so that the first two trials start on both nodes."""
    path = cluster.private_dir / f"project-{request.node.name[:40]}"
    shutil.copytree(REPO / "configs", path / "configs")
    cluster.wait_idle()
    return path


def test_the_docs_commands_run_from_a_project_directory_with_trials_on_both_nodes(cluster, project):
    commands = _docs_ray_commands()
    assert [(c[1], c[2]) for c in commands] == [
        ("sweep", "cartpole"),
        ("compare", "configs/cartpole.toml"),
    ]
    # the sweep's trials last long enough for both nodes' trial actors to start (Tune reuses
    # the first one for short trials); the comparison's need not
    episodes = {"sweep": 300, "compare": 40}
    for args in commands:
        if "--address" in args:  # the docs' head is another machine's: this cluster's instead
            args[args.index("--address") + 1] = cluster.address
        args += ["--set", f"train.episodes={episodes[args[1]]}"]
        done = cluster.run_in_head(args, cwd=project, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
    trials = _trials(project / "runs" / "lr")
    assert len(trials) == 9 and {r["status"] for r in trials.values()} <= {"ok", "stopped"}
    assert {r["node"] for r in trials.values()} == set(cluster.node_ips)
    with open(project / "runs" / "compare" / "comparison.csv") as f:
        runs = list(csv.DictReader(f))
    assert len(runs) == 10 and all(r["status"] == "ok" and r["episodes"] == "40" for r in runs)


def test_a_relative_train_init_is_read_by_the_driver_and_used_on_both_nodes(
    cluster, project, tmp_path, monkeypatch
):
    monkeypatch.chdir(project)
    start = load_config("configs/cartpole.toml", ["train.episodes=20", "log.progress=false"])
    train(start, out="runs/start")  # initial weights: a run directory and, one level up, a copy
    shutil.copy("runs/start/checkpoint.npz", project.parent / "start.npz")
    inits = ["runs/start", "../start.npz"]
    args = ["pgrl", "sweep", "configs/cartpole.toml", "--grid", f"train.init={','.join(inits)}"]
    args += ["--seeds", "0", "1", "--set", "train.episodes=300", "--out", "runs/sweep"]
    done = cluster.run_in_head(
        [*args, "--executor", "ray"], cwd=project, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    trials = _trials(project / "runs" / "sweep")
    assert all(r["status"] == "ok" for r in trials.values()) and len(trials) == 4
    assert {r["node"] for r in trials.values()} == set(cluster.node_ips)
    for point, init in enumerate(inits):
        for seed in (0, 1):
            run = project / "runs" / "sweep" / f"p{point}-numpy-seed{seed}"
            assert load_config(run / "config.toml").train.init == init  # as the local executor
            sets = [f"train.init={init}", f"train.seed={seed}", "train.episodes=300"]
            sets.append("log.progress=false")
            train(load_config("configs/cartpole.toml", sets), out=tmp_path / run.name)
            local = read_metrics(tmp_path / run.name / "metrics.csv")
            np.testing.assert_array_equal(
                read_metrics(run / "metrics.csv")["return"], local["return"]
            )


def test_the_driver_reads_every_train_init_and_leaves_the_configs_as_given(tmp_path, monkeypatch):
    driver = tmp_path / "driver" / "project"
    (driver / "runs").mkdir(parents=True)
    monkeypatch.chdir(driver)
    cfg = load_config("cartpole", ["train.episodes=10", "log.progress=false"])
    train(cfg, out="runs/start")
    shutil.copy("runs/start/checkpoint.npz", tmp_path / "driver" / "up.npz")
    shutil.copy("runs/start/checkpoint.npz", tmp_path / "abs.npz")
    given = ["runs/start", "runs/../../up.npz", str(tmp_path / "abs.npz"), "pong", None]
    configs = {f"t{i}": Config() for i in range(len(given))}
    for c, init in zip(configs.values(), given, strict=True):
        c.train.init = init
    inits = read_inits(configs)
    assert [c.train.init for c in configs.values()] == given  # recorded as the user gave them
    assert sorted(inits) == sorted(given[:4])
    for init in given[:4]:  # what train() would read from the path, read once by the driver
        expected = read_init(init)
        for name, w in expected["weights"].items():
            np.testing.assert_array_equal(inits[init]["weights"][name], w)
        assert inits[init]["config"] == expected["config"]


def test_a_train_init_the_driver_cannot_find_is_one_line(tmp_path):
    cfg = Config()
    cfg.train.init = str(tmp_path / "missing.npz")
    with pytest.raises(ConfigError, match=r"^train.init: .*missing.npz: no such file"):
        read_inits({"t": cfg})


_HOLD_TRIAL_DIRECTORY = """
import signal, sys, threading, time
from pathlib import Path
import pgrl.ray_executor as r

def hold():
    with r.trial_directory(sys.argv[2]) as d:
        (d / "run").mkdir()
        print(d, flush=True)
        time.sleep(600)

r.TRIALS_DIR = Path(sys.argv[1])
if sys.argv[2] == "exited":  # as a Ray worker holds a Tune trial, and exits on SIGTERM
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    threading.Thread(target=hold, daemon=True).start()
    time.sleep(600)
else:
    hold()
"""


def test_the_directory_of_a_killed_trial_goes_at_the_next_cleanup(tmp_path, monkeypatch):
    trials = tmp_path / "trials"
    monkeypatch.setattr(pgrl.ray_executor, "TRIALS_DIR", trials)
    names = ("killed", "terminated", "exited", "running")
    procs = {
        name: subprocess.Popen(
            [sys.executable, "-c", _HOLD_TRIAL_DIRECTORY, str(trials), name],
            stdout=subprocess.PIPE,
            text=True,
        )
        for name in names
    }
    try:
        dirs = {name: Path(p.stdout.readline().strip()) for name, p in procs.items()}
        assert all(d.is_dir() and d.parent == trials for d in dirs.values())
        for name, sig in zip(names, (signal.SIGKILL, signal.SIGTERM, signal.SIGTERM), strict=False):
            procs[name].send_signal(sig)
            procs[name].wait(timeout=30)
        assert not dirs["exited"].exists()  # the interpreter exited: its own cleanup ran
        assert dirs["killed"].is_dir() and dirs["terminated"].is_dir()  # nothing of theirs ran
        removed = remove_stale_trial_dirs()
        assert sorted(removed) == sorted(dirs[n].name for n in ("killed", "terminated"))
        assert dirs["running"].is_dir()
        procs["running"].kill()
        procs["running"].wait(timeout=30)
        with trial_directory("next") as d:  # a new trial removes what was left on its node
            assert not dirs["running"].exists() and list(trials.iterdir()) == [d]
        assert list(trials.iterdir()) == []
    finally:
        for p in procs.values():
            p.kill()
            p.wait()
