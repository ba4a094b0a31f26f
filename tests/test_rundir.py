"""A run directory nothing can corrupt: --force, the lock, resume checks, stale files, NaN."""

import csv
import os
import subprocess
import sys

import numpy as np
import pytest

import pgrl.reinforce
from pgrl.checkpoint import load_checkpoint
from pgrl.config import ConfigError, load_config
from pgrl.reinforce import DivergedError, train
from pgrl.rundir import RunDir

CARTPOLE = "configs/cartpole.toml"


def small(*overrides, episodes=20):
    return load_config(CARTPOLE, ["log.progress=false", f"train.episodes={episodes}", *overrides])


def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def run_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "pgrl.cli", *args], capture_output=True, text=True, timeout=120
    )


def one_line_error(result, *fragments):
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def killed_after_start(monkeypatch):
    """Make the next train() die right after it opened its run (as a SIGKILL would)."""

    def die(*args, **kwargs):
        raise SystemExit("killed")

    monkeypatch.setattr(pgrl.reinforce, "_loop", die)


def test_force_leaves_only_the_new_run(tmp_path, monkeypatch):
    train(small("train.seed=1"), out=tmp_path)
    assert (tmp_path / "summary.json").is_file()
    with monkeypatch.context() as m:
        killed_after_start(m)
        with pytest.raises(SystemExit):
            train(small("train.seed=2"), out=tmp_path, overwrite=True)
    assert not (tmp_path / "summary.json").exists()
    assert rows(tmp_path / "metrics.csv") == []
    ckpt = load_checkpoint(tmp_path / "checkpoint.npz")  # the new run's initial state
    assert ckpt["state"]["updates"] == 0 and "seed = 2" in ckpt["config"]
    # resuming continues the new run, not the old one, and equals an uninterrupted new run
    resumed = train(small("train.seed=2"), out=tmp_path, resume=True)
    fresh = train(small("train.seed=2"), out=tmp_path / "fresh")
    assert resumed["episodes"] == fresh["episodes"] == 20
    assert resumed["final_running_return"] == fresh["final_running_return"]


def test_a_run_killed_before_its_first_update_resumes(tmp_path, monkeypatch):
    with monkeypatch.context() as m:
        killed_after_start(m)
        with pytest.raises(SystemExit):
            train(small(), out=tmp_path)
    one_line_error(
        run_cli("train", CARTPOLE, "--out", str(tmp_path), "--set", "train.episodes=20"),
        "already holds a run",
        "--resume",
        "--force",
    )
    summary = train(small(), out=tmp_path, resume=True)
    assert summary["episodes"] == 20 and len(rows(tmp_path / "metrics.csv")) == 20


def test_a_second_writer_is_refused_and_a_stale_lock_is_not(tmp_path):
    train(small(), out=tmp_path)
    holder = RunDir(tmp_path)
    holder.prepare(small(episodes=40), resume=True, overwrite=False)  # holds the lock
    try:
        for extra in (["--resume"], ["--force"]):
            line = one_line_error(
                run_cli("train", CARTPOLE, "--out", str(tmp_path), *extra),
                "another pgrl process",
                f"pid {os.getpid()}",
            )
            assert str(tmp_path) in line
    finally:
        holder.close()
    # the lock file stays behind, naming a process that no longer holds it: no obstacle
    assert (tmp_path / ".lock").read_text().strip() == str(os.getpid())
    summary = train(small(episodes=40), out=tmp_path, resume=True)
    assert summary["episodes"] == 40


def test_resume_checks_the_config_against_the_runs(tmp_path):
    train(small(), out=tmp_path)
    before = rows(tmp_path / "metrics.csv")
    for change, key in (
        ("optimizer.learning_rate=0.5", "optimizer.learning_rate"),
        ("train.seed=7", "train.seed"),
        ("policy.dtype=float32", "policy.dtype"),
        ("train.gamma=0.9", "train.gamma"),
    ):
        result = run_cli(
            "train", CARTPOLE, "--out", str(tmp_path), "--resume", "--set", "train.episodes=40",
            "--set", change,
        )  # fmt: skip
        one_line_error(result, "differs from the run's in", key, "--allow-changes")
    assert rows(tmp_path / "metrics.csv") == before and not (tmp_path / "resumes.log").exists()
    # budgets and the backend may change: recorded
    train(small(episodes=40), out=tmp_path, resume=True, backend="tensorflow")
    log = (tmp_path / "resumes.log").read_text()
    assert "train.episodes: 20 -> 40" in log and "policy.backend: 'numpy' -> 'tensorflow'" in log
    # anything else only when asked for, and recorded
    train(small("train.gamma=0.9", episodes=60), out=tmp_path, resume=True, allow_changes=True)
    assert "train.gamma: 0.99 -> 0.9" in (tmp_path / "resumes.log").read_text().splitlines()[-1]
    assert len(rows(tmp_path / "metrics.csv")) == 60


def test_stale_temp_files_are_cleaned_at_the_next_start(tmp_path):
    train(small(), out=tmp_path)
    stale = [tmp_path / ".checkpoint-x1y2.npz.tmp", tmp_path / ".metrics.csv.tmp"]
    for path in stale:
        path.write_bytes(b"\0" * 1000)
    train(small(episodes=40), out=tmp_path, resume=True)
    assert not any(path.exists() for path in stale)


def test_divergence_stops_the_run_and_keeps_a_finite_checkpoint(tmp_path):
    cfg = small("optimizer.learning_rate=1e300", "train.checkpoint_every=1", episodes=200)
    with pytest.raises(
        DivergedError, match=r"update (\d+): .*NaN or inf .*= 1e\+300 too large"
    ) as e:
        train(cfg, out=tmp_path)
    update = int(e.value.args[0].split()[1].rstrip(":"))
    ckpt = load_checkpoint(tmp_path / "checkpoint.npz")  # the update before, all finite
    assert ckpt["state"]["updates"] == update - 1
    assert all(np.isfinite(w).all() for w in ckpt["weights"].values())
    assert not (tmp_path / "summary.json").exists()
    result = run_cli(
        "train", CARTPOLE, "--out", str(tmp_path / "cli"), "--set", "optimizer.learning_rate=1e300",
        "--set", "log.progress=false",
    )  # fmt: skip
    one_line_error(result, f"update {update}:", "NaN or inf", "too large?")
    assert (
        run_cli("eval", str(tmp_path / "cli" / "checkpoint.npz"), "--episodes", "1").returncode == 0
    )


def test_empty_out_is_refused(tmp_path, monkeypatch):
    cfg = small()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="empty path"):
        train(cfg, out="")
    assert list(tmp_path.iterdir()) == []
