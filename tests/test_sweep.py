"""pgrl sweep with the local executor: grid parsing, files, equality with pgrl train, resume,
bad input. The Ray executor is tested on a namespaced cluster in test_ray.py."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import numpy as np
import pytest

from pgrl.cli import main as cli_main
from pgrl.config import ConfigError, load_config
from pgrl.reinforce import train
from pgrl.rundir import read_metrics
from pgrl.sweep import parse_grid, split_values, sweep

CARTPOLE = "configs/cartpole.toml"
SMALL = ["train.episodes=200", "log.progress=false"]


def test_split_values_keeps_lists_and_quoted_commas():
    assert split_values("1e-3, 3e-3") == ["1e-3", "3e-3"]
    assert split_values("[16],[32,32]") == ["[16]", "[32,32]"]
    assert split_values('"a,b",c') == ['"a,b"', "c"]


def test_parse_grid_reads_values_as_set_does():
    grid = parse_grid(CARTPOLE, ["policy.hidden_sizes=[16],[32, 32]", "train.gamma=0.9"], [])
    assert grid == [("policy.hidden_sizes", ["[16]", "[32, 32]"]), ("train.gamma", ["0.9"])]


def test_parse_grid_errors_name_grid_not_set():
    deep = "[" * 3000 + "]" * 3000
    with pytest.raises(ConfigError, match=r"^--grid 'policy.hidden_sizes=\[\[.*nested too deep"):
        parse_grid(CARTPOLE, [f"policy.hidden_sizes={deep}"], [])


@pytest.mark.parametrize(
    "grid, message",
    [
        ("optimizer.learning_rate", "expected section.key=v1,v2"),
        ("optimizer.learnin_rate=1e-3", "learnin_rate"),
        ("optimizer.learning_rate=1e-3,-1", "--grid optimizer.learning_rate=-1"),
        ("optimizer.learning_rate=1e-3,,1e-2", "an empty value"),
        ("optimizer.learning_rate=1e-3,1e-3", "listed twice"),
        ("train.seed=1,2", "use --seeds"),
        ("policy.backend=numpy,tensorflow", "use --backend"),
        ("policy.hidden_sizes=[16],[0]", "--grid policy.hidden_sizes=[0]"),
    ],
)
def test_bad_grid_is_one_line_and_starts_nothing(tmp_path, capsys, grid, message):
    out = tmp_path / "sweep"
    assert cli_main(["sweep", CARTPOLE, "--grid", grid, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not out.exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--scheduler", "asha"], "needs --executor ray"),
        (["--storage", "/tmp/x"], "needs --executor ray"),
        (["--address", "10.1.2.3:6379"], "needs --executor ray"),
        (["--seeds", "0", "0"], "lists a value twice"),
        (["--workers", "0"], "--workers must be >= 1"),
        (["--executor", "ray", "--address", "127.0.0.1:1"], "cannot reach a Ray head"),
        (["--executor", "ray", "--address", "nonsense"], "expected HOST:PORT"),
        (["--executor", "ray", "--set", "train.init=nowhere.npz"], "train.init: nowhere.npz: no"),
    ],
)
def test_bad_arguments_are_one_line(tmp_path, capsys, monkeypatch, args, message):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)  # the driver's checks only: no Ray started
    out = tmp_path / "sweep"
    argv = ["sweep", CARTPOLE, "--grid", "train.gamma=0.9,0.99", "--out", str(out), *args]
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not out.exists()


def test_ray_executor_without_ray_installed_is_one_line(tmp_path):
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['ray'] = None\n"
        "from pgrl.cli import main\n"
        f"sys.exit(main(['sweep', '{CARTPOLE}', '--executor', 'ray', '--out', '{tmp_path}/s']))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr == "pgrl sweep: error: --executor ray needs Ray: pip install 'pgrl[ray]'\n"
    assert not (tmp_path / "s").exists()


@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep")
    grid = ["optimizer.learning_rate=3e-3,1e-2"]
    rows = sweep(CARTPOLE, grid, seeds=(0, 1), out=out, overrides=SMALL, progress=False)
    return out, rows


def test_a_sweep_writes_every_file_and_each_trial_is_a_pgrl_train_run(finished_sweep, tmp_path):
    out, rows = finished_sweep
    assert [r["trial"] for r in rows] == [
        "p0-numpy-seed0",
        "p0-numpy-seed1",
        "p1-numpy-seed0",
        "p1-numpy-seed1",
    ]
    assert all(r["status"] == "ok" and r["episodes"] == 200 for r in rows)
    for name in ("trials.csv", "sweep.csv", "sweep.md", "sweep.png", "best.toml", "sweep.json"):
        assert (out / name).is_file(), name
    with open(out / "sweep.csv") as f:
        table = list(csv.DictReader(f))
    assert [(r["point"], r["optimizer.learning_rate"], r["solved"]) for r in table] == [
        ("p0", "0.003", "0/2"),
        ("p1", "0.01", "0/2"),
    ]
    final = [float(r["final_running_return"]) for r in rows]
    means = [float(r["final_running_return_mean"]) for r in table]
    assert means == pytest.approx([np.mean(final[:2]), np.mean(final[2:])], abs=0.01)
    # trial p1-numpy-seed1 is exactly `pgrl train` with that learning rate and seed
    cfg = load_config(CARTPOLE, [*SMALL, "optimizer.learning_rate=1e-2", "train.seed=1"])
    train(cfg, out=tmp_path / "alone")
    alone = read_metrics(tmp_path / "alone" / "metrics.csv")
    trial = read_metrics(out / "p1-numpy-seed1" / "metrics.csv")
    np.testing.assert_array_equal(alone["return"], trial["return"])


def test_best_toml_is_the_best_points_config_and_trains(finished_sweep):
    out, rows = finished_sweep
    best = max(
        ("p0", "p1"),
        key=lambda p: np.mean([r["final_running_return"] for r in rows if r["point"] == p]),
    )
    lr = {"p0": 0.003, "p1": 0.01}[best]
    data = tomllib.loads((out / "best.toml").read_text())
    assert data["optimizer"]["learning_rate"] == lr
    assert load_config(out / "best.toml").optimizer.learning_rate == lr


def test_an_existing_sweep_is_refused_and_a_changed_one_does_not_resume(finished_sweep, capsys):
    out, _ = finished_sweep
    argv = ["sweep", CARTPOLE, "--out", str(out), "--seeds", "0", "1"]
    grid = ["--grid", "optimizer.learning_rate=3e-3,1e-2", *sum((["--set", s] for s in SMALL), [])]
    assert cli_main([*argv, *grid]) == 2
    assert "--resume continues it, --force starts afresh" in capsys.readouterr().err
    assert cli_main([*argv, "--grid", "optimizer.learning_rate=1e-3", "--resume"]) == 2
    assert "other grid" in capsys.readouterr().err


UNREADABLE_RECORDS = {
    "garbage bytes": b"\xff\xfe\x00\x81garbage",
    "not JSON": b"trials = p0",
    "not an object": b"[1, 2]",
    "no trial list": b'{"trials": "p0-numpy-seed0"}',
    "a name outside the sweep": b'{"trials": ["..", "p0-numpy-seed0"]}',
}


@pytest.mark.parametrize("content", UNREADABLE_RECORDS.values(), ids=UNREADABLE_RECORDS)
def test_an_unreadable_sweep_json_is_one_line(tmp_path, capsys, content):
    out = tmp_path / "sweep"
    out.mkdir()
    (out / "sweep.json").write_bytes(content)
    argv = ["sweep", CARTPOLE, "--out", str(out), *sum((["--set", s] for s in SMALL), [])]
    for extra, message in (
        ([], "holds a sweep whose sweep.json is unreadable ("),
        (["--resume"], "sweep.json is unreadable ("),
    ):
        assert cli_main([*argv, *extra]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1 and "Traceback" not in err, err
    assert (out / "sweep.json").read_bytes() == content and list(out.iterdir()) == [
        out / "sweep.json"
    ]


@pytest.mark.parametrize("name", ["garbage bytes", "a name outside the sweep"])
def test_force_replaces_an_unreadable_sweep_json_and_removes_no_directory(tmp_path, name):
    out = tmp_path / "sweep"
    for kept in (tmp_path / "beside", out / "p1-numpy-seed0"):  # which trials it had is unknown
        kept.mkdir(parents=True)
        (kept / "notes.txt").write_text("mine")
    (out / "sweep.json").write_bytes(UNREADABLE_RECORDS[name])
    argv = ["sweep", CARTPOLE, "--out", str(out), "--force", "--set", "train.episodes=20"]
    assert cli_main([*argv, "--set", "log.progress=false"]) == 0
    assert json.loads((out / "sweep.json").read_text())["trials"] == ["p0-numpy-seed0"]
    assert (tmp_path / "beside" / "notes.txt").is_file()
    assert (out / "p1-numpy-seed0" / "notes.txt").is_file()


def test_a_sweep_json_that_is_no_file_is_one_line_even_with_force(tmp_path, capsys):
    out = tmp_path / "sweep"
    (out / "sweep.json").mkdir(parents=True)
    argv = ["sweep", CARTPOLE, "--out", str(out), "--set", "train.episodes=20"]
    for extra in ([], ["--force"], ["--resume"]):
        assert cli_main([*argv, *extra]) == 2
        err = capsys.readouterr().err
        assert "sweep.json is not a file" in err and err.count("\n") == 1, err
    assert list(out.iterdir()) == [out / "sweep.json"]


def test_resume_keeps_finished_trials_and_continues_the_others(tmp_path):
    grid = ["optimizer.learning_rate=1e-2"]
    full = sweep(
        CARTPOLE, grid, seeds=(0, 1), out=tmp_path / "full", overrides=SMALL, progress=False
    )
    out = tmp_path / "cut"
    sweep(CARTPOLE, grid, seeds=(0, 1), out=out, overrides=SMALL, progress=False)
    # trial seed1 as if the sweep had been stopped at episode 100: its run ends there
    run = out / "p0-numpy-seed1"
    cfg = load_config(CARTPOLE, [*SMALL, "optimizer.learning_rate=1e-2", "train.seed=1"])
    cfg.train.episodes = 100
    train(cfg, out=run, overwrite=True)
    summary = json.loads((run / "summary.json").read_text())
    (run / "summary.json").write_text(json.dumps({**summary, "stopped_by": "interrupted"}))
    kept = (out / "p0-numpy-seed0" / "checkpoint.npz").stat().st_mtime_ns
    rows = sweep(
        CARTPOLE, grid, seeds=(0, 1), out=out, overrides=SMALL, resume=True, progress=False
    )
    assert (out / "p0-numpy-seed0" / "checkpoint.npz").stat().st_mtime_ns == kept
    assert [r["episodes"] for r in rows] == [200, 200]
    for seed in (0, 1):
        a = read_metrics(tmp_path / "full" / f"p0-numpy-seed{seed}" / "metrics.csv")
        b = read_metrics(out / f"p0-numpy-seed{seed}" / "metrics.csv")
        np.testing.assert_array_equal(a["return"], b["return"])
    assert [r["final_running_return"] for r in rows] == [r["final_running_return"] for r in full]


def test_ctrl_c_stops_the_sweep_at_once_and_resume_finishes_it(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "sweep"
    args = [sys.executable, "-m", "pgrl.cli", "sweep", CARTPOLE, "--seeds", "0", "1", "2"]
    args += ["--set", "train.episodes=600", "--set", "optimizer.learning_rate=3e-3", "--out"]
    driver = subprocess.Popen(
        [*args, str(out)],
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        # as in a terminal, even when the tests run in a background job (which ignores SIGINT)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    running = [out / "p0-numpy-seed0", out / "p0-numpy-seed1"]  # two workers, two trials
    deadline = time.time() + 60
    while time.time() < deadline and not all(
        (d / "metrics.csv").is_file() and len((d / "metrics.csv").read_text().splitlines()) > 60
        for d in running
    ):
        time.sleep(0.05)
    os.killpg(driver.pid, signal.SIGINT)  # Ctrl-C reaches the whole process group
    _, err = driver.communicate(timeout=60)
    assert driver.returncode == 130
    assert "Traceback" not in err and "warn" not in err
    assert err.splitlines()[-1] == (
        f"pgrl sweep: interrupted; finished trials are in {out}, --resume continues the others"
    )
    assert not (out / "p0-numpy-seed2").exists()  # two workers: the third trial never started
    done = subprocess.run([*args, str(out), "--resume"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    with open(out / "trials.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["episodes"] for r in rows] == ["600"] * 3
    assert [int(r["resumed_from"] or 0) > 0 for r in rows] == [True, True, False]


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["env.runner=ray", "env.num_workers=0"], "'env.num_workers' must be >= 1"),
        (["env.runner=cluster"], "'env.runner' must be one of local, processes, ray"),
        (["env.runner=ray", "env.envs_per_worker=-1"], "'env.envs_per_worker' must be >= 1"),
    ],
)
def test_bad_runner_settings_are_one_line(tmp_path, capsys, overrides, message):
    argv = [
        "train",
        CARTPOLE,
        "--out",
        str(tmp_path / "r"),
        *sum((["--set", o] for o in overrides), []),
    ]
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_ray_runner_at_an_unreachable_address_is_one_line(tmp_path, capsys):
    argv = ["train", CARTPOLE, "--out", str(tmp_path / "r"), "--set", "env.runner=ray"]
    assert cli_main([*argv, "--address", "127.0.0.1:1"]) == 2
    assert "cannot reach a Ray head" in capsys.readouterr().err


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (Linux /proc)."""
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads Linux /proc")
def test_trial_processes_end_when_the_driver_is_killed(tmp_path):
    """A sweep's driver killed outright (SIGKILL: no handler runs) leaves no trial training on."""
    out = tmp_path / "sweep"
    args = [
        sys.executable, "-m", "pgrl", "sweep", CARTPOLE, "--grid", "train.gamma=0.9,0.99",
        "--seeds", "0", "--backend", "numpy", "--workers", "2", "--out", str(out),
        "--set", "train.episodes=1000000", "--set", "train.solved_mean100=1000",
        "--set", "log.progress=false",
    ]  # fmt: skip
    driver = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not all((out / f"p{i}-numpy-seed0" / "metrics.csv").is_file() for i in (0, 1)):
            assert driver.poll() is None and time.monotonic() < deadline, "trials did not start"
            time.sleep(0.2)
        workers = _children(driver.pid)
        assert len(workers) >= 2
    finally:
        driver.kill()
        driver.wait()
    deadline = time.monotonic() + 30
    while any(_alive(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = [p for p in workers if _alive(p)]
    for p in left:
        os.kill(p, signal.SIGKILL)
    assert not left, f"trial processes {left} kept running after their driver was killed"
