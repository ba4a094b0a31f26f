"""A run directory nothing can corrupt: --force, the lock, resume checks, stale files, NaN."""

import csv
import os
import shutil
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


def test_disk_full_while_logging_tears_no_row_and_keeps_the_checkpoint(tmp_path, monkeypatch):
    """A write that fills the disk half-way through an update's rows: one error line, the file
    cut back to its last whole update, the checkpoint intact, and --resume continues exactly."""
    import errno

    import pgrl.rundir

    real_write, calls = os.write, []

    def full_disk(fd, data):
        calls.append(len(data))
        if len(calls) == 7:  # the metrics rows of the 4th update: half of them fit
            real_write(fd, bytes(data[: len(data) // 2]))
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    cfg = small("train.batch_episodes=5", "train.checkpoint_every=2", "env.num_envs=5", episodes=30)
    monkeypatch.setattr(pgrl.rundir.os, "write", full_disk)
    with pytest.raises(ConfigError, match=r"metrics.csv: cannot write \(No space left on device\)"):
        train(cfg, out=tmp_path)
    monkeypatch.setattr(pgrl.rundir.os, "write", real_write)
    logged = rows(tmp_path / "metrics.csv")
    assert [int(r["episode"]) for r in logged] == list(range(1, 16))  # 3 whole updates
    assert all(r["update"] for r in logged) and len(rows(tmp_path / "updates.csv")) == 3
    assert load_checkpoint(tmp_path / "checkpoint.npz")["state"]["updates"] == 2
    train(cfg, out=tmp_path, resume=True)
    fresh = tmp_path / "fresh"
    train(cfg, out=fresh)
    strip = [
        {k: v for k, v in r.items() if k != "wall_time"} for r in rows(tmp_path / "metrics.csv")
    ]
    assert strip == [
        {k: v for k, v in r.items() if k != "wall_time"} for r in rows(fresh / "metrics.csv")
    ]


def test_disk_full_while_checkpointing_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    import errno

    import pgrl.checkpoint

    real_savez, saves = np.savez, []

    def full_disk(f, **arrays):
        saves.append(1)
        if len(saves) == 3:  # the initial checkpoint and update 2's fit; update 4's does not
            f.write(b"\0" * 100)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_savez(f, **arrays)

    monkeypatch.setattr(pgrl.checkpoint.np, "savez", full_disk)
    cfg = small("train.batch_episodes=5", "train.checkpoint_every=2", "env.num_envs=5", episodes=30)
    with pytest.raises(
        ConfigError, match=r"checkpoint.npz: cannot write \(No space left on device\)"
    ):
        train(cfg, out=tmp_path)
    assert load_checkpoint(tmp_path / "checkpoint.npz")["state"]["updates"] == 2
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.fixture(scope="module")
def cartpole_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    train(small(), out=out)
    return out


def bad_inputs(run, tmp_path):
    """(pgrl arguments, a fragment of the one-line error) for mistakes that once gave a
    traceback or were silently accepted."""
    ckpt = str(run / "checkpoint.npz")
    random_bytes = tmp_path / "random.npz"
    random_bytes.write_bytes(np.random.default_rng(0).bytes(5000))
    base = ["train", CARTPOLE, "--out", str(tmp_path / "new")]
    return [
        (["eval", ckpt, "--gif", "/proc/x.gif"], "cannot write there"),
        (["eval", ckpt, "--gif", str(tmp_path)], "ending in .gif"),
        (["eval", ckpt, "--gif", str(tmp_path / "x.txt")], "ending in .gif"),
        (["eval", ckpt, "--seed", "-1"], "--seed must be >= 0"),
        (["compare", CARTPOLE, "--out", str(run / "config.toml")], "not a directory"),
        ([*base, "--set", "policy.hidden_sizes=[10000000000]"], "more than this machine's memory"),
        ([*base, "--set", "policy.hidden_sizes=[100000000]"], "GiB to train, more than this"),
        (["check", CARTPOLE, "--set", "policy.hidden_sizes=[100000000]"], "GiB to train"),
        ([*base, "--set", "env.num_envs=100000000"], "rollout buffers alone take 1,526 GiB"),
        (["eval", str(run / "config.toml")], "not an .npz archive"),
        (["eval", str(random_bytes)], "not an .npz archive"),
        ([*base, "--set", "train.seed=" + "9" * 100_000], "chars)"),
        ([*base, "--set", "train.solved_mean100=-1e9"], "lowest return"),
        ([*base, "--set", "env.kwargs={repeat_action_probability=2.0}"], "must be in [0, 1]"),
        ([*base, "--set", "env.kwargs={max_episode_steps=-1}"], "positive integer"),
        (["train", CARTPOLE, "--out", ""], "empty path"),
        (["check", CARTPOLE, "--seed", "-1"], "--seed must be >= 0"),
        ([*base, "--allow-changes"], "--allow-changes: only applies with --resume"),
        ([*base, "--init", str(tmp_path / "missing.npz")], "train.init: "),
        ([*base, "--init", str(run / "config.toml")], "not an .npz archive"),
        ([*base, "--init", "pong"], "holds a categorical policy with 3 actions"),
        ([*base, "--init", ckpt, "--set", "policy.hidden_sizes=[7]"], "does not fit this network"),
        ([*base, "--init", ckpt, "--set", "policy.head=categorical"], "holds a bernoulli policy"),
        ([*base, "--init", ""], "train.init"),
        (["train", CARTPOLE, "--out", str(tmp_path / ("d" * 5000))], "File name too long"),
        (["compare", CARTPOLE, "--out", str(tmp_path / ("d" * 5000))], "File name too long"),
    ]


def test_mistakes_get_one_line_and_nothing_is_written(cartpole_run, tmp_path):
    before = {p.name: p.read_bytes() for p in cartpole_run.iterdir()}
    for args, fragment in bad_inputs(cartpole_run, tmp_path):
        result = run_cli(*args)
        line = one_line_error(result, fragment)
        assert len(line) < 400 and "allow_pickle" not in line, line
    assert {p.name: p.read_bytes() for p in cartpole_run.iterdir()} == before
    assert not (tmp_path / "new").exists()


def test_damaged_checkpoints_and_a_deleted_metrics_file_are_refused(tmp_path):
    from pgrl.checkpoint import save_checkpoint
    from pgrl.policies import make_policy

    train(small(), out=tmp_path / "a")
    (tmp_path / "a" / "metrics.csv").unlink()
    one_line_error(
        run_cli("train", CARTPOLE, "--out", str(tmp_path / "a"), "--resume"),
        "holds 0 rows of the checkpoint's 20 episodes",
        "--force",
    )
    policy = make_policy("numpy", 4, hidden_sizes=(32,), bias=True)
    state = {
        "episodes": -5,
        "steps": 0,
        "env_steps": 0,
        "updates": 0,
        "wall_time": 0.0,
        "running_return": None,
        "solved_episode": None,
        "recent_returns": [],
    }
    cfg_toml = small().to_toml()
    save_checkpoint(tmp_path / "neg.npz", policy, state, {}, cfg_toml)
    one_line_error(run_cli("eval", str(tmp_path / "neg.npz")), "negative counters")
    state["episodes"] = 0
    save_checkpoint(tmp_path / "int.npz", policy, state, {}, cfg_toml)
    data = dict(np.load(tmp_path / "int.npz"))
    data["w_W1"] = data["w_W1"].astype(np.int64)
    np.savez(tmp_path / "int.npz", **data)
    one_line_error(run_cli("eval", str(tmp_path / "int.npz")), "'W1' are int64, not floats")


def test_ctrl_c_before_the_run_starts_claims_nothing(tmp_path, monkeypatch, capsys):
    from pgrl.cli import main

    def interrupted(cfg, backend, address=None):
        raise KeyboardInterrupt

    monkeypatch.setattr(pgrl.reinforce, "make_runner", interrupted)
    assert main(["train", CARTPOLE, "--out", str(tmp_path / "run")]) == 130
    err = capsys.readouterr().err.strip()
    assert err == "pgrl train: interrupted"
    assert not (tmp_path / "run").exists()  # the directory it made for the run is gone


KILLER = """
import os, signal, sys
import numpy as np
import pgrl.checkpoint, pgrl.reinforce, pgrl.rundir
where, n = sys.argv[1], int(sys.argv[2])
calls = []

def kill_on(before=lambda *a: None):
    calls.append(1)
    if len(calls) == n:
        before()
        os.kill(os.getpid(), signal.SIGKILL)

if where == "checkpoint":  # half-way through writing a checkpoint's temp file
    real = np.savez
    def savez(f, **arrays):
        kill_on(lambda: (f.write(b"PK" + b"\\0" * 5000), f.flush()))
        return real(f, **arrays)
    pgrl.checkpoint.np.savez = savez
elif where == "rows":  # half-way through an update's rows
    real_write = os.write
    def write(fd, data):
        kill_on(lambda: real_write(fd, bytes(data[: len(data) // 2])))
        return real_write(fd, data)
    pgrl.rundir.os.write = write
else:  # during a rollout
    import pgrl.workers
    real_play = pgrl.workers.play_slots
    def play(*args, **kwargs):
        kill_on()
        return real_play(*args, **kwargs)
    pgrl.workers.play_slots = play
from pgrl.cli import main
sys.exit(main(sys.argv[3:]))
"""


def test_sigkill_anywhere_then_resume_equals_an_uninterrupted_run(tmp_path):
    args = [
        "train", CARTPOLE, "--set", "train.episodes=120", "--set", "log.progress=false",
        "--set", "train.checkpoint_every=2",
    ]  # fmt: skip
    reference = tmp_path / "reference"
    assert run_cli(*args, "--out", str(reference)).returncode == 0
    expected = [
        {k: v for k, v in r.items() if k != "wall_time"} for r in rows(reference / "metrics.csv")
    ]
    expected_w = load_checkpoint(reference / "checkpoint.npz")["weights"]
    for where, n in (("checkpoint", 3), ("rows", 5), ("rollout", 4), ("checkpoint", 1)):
        out = tmp_path / f"{where}{n}"
        killed = subprocess.run(
            [sys.executable, "-c", KILLER, where, str(n), *args, "--out", str(out)],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert killed.returncode == -9, (where, killed.stderr)
        resumed = run_cli(*args, "--out", str(out), "--resume")
        assert resumed.returncode == 0, (where, resumed.stderr)
        got = [{k: v for k, v in r.items() if k != "wall_time"} for r in rows(out / "metrics.csv")]
        assert got == expected, where
        weights = load_checkpoint(out / "checkpoint.npz")["weights"]
        assert all(np.array_equal(weights[k], expected_w[k]) for k in expected_w), where
        assert not list(out.glob(".*.tmp")), where


def test_force_removes_the_old_runs_resume_log(tmp_path):
    train(small(), out=tmp_path)
    train(small("train.gamma=0.9", episodes=40), out=tmp_path, resume=True, allow_changes=True)
    assert (tmp_path / "resumes.log").is_file()
    train(small("train.seed=3"), out=tmp_path, overwrite=True)
    assert not (tmp_path / "resumes.log").exists()


def test_resume_checks_the_numbering_of_the_rows(tmp_path):
    train(small(episodes=30), out=tmp_path)
    metrics = tmp_path / "metrics.csv"
    good = metrics.read_text()
    lines = good.splitlines(keepends=True)
    del lines[10]  # episode 10 goes, episode 20 appears twice: the count stays 30
    lines.insert(20, lines[20])
    metrics.write_text("".join(lines))
    args = ["train", CARTPOLE, "--out", str(tmp_path), "--resume", "--set", "train.episodes=40"]
    one_line_error(run_cli(*args), "metrics.csv: row 10 is episode 11, expected 10", "--force")
    assert metrics.read_text() == "".join(lines)
    # numbered 1..30 but not the checkpoint's rows: the steps differ
    lines = good.splitlines(keepends=True)
    last = lines[-1].split(",")
    lines[-1] = ",".join([last[0], str(int(last[1]) + 7), *last[2:]])
    metrics.write_text("".join(lines))
    one_line_error(run_cli(*args), "its last row has steps")
    metrics.write_text(good)
    assert run_cli(*args).returncode == 0
    assert [int(r["episode"]) for r in rows(metrics)] == list(range(1, 41))


def _damaged(path, tmp_path):
    """Checkpoints with the given defects, made from the checkpoint at ``path``."""
    import io
    import zipfile

    data = dict(np.load(path))
    objects = {**data, "w_W1": np.array([{"a": 1}], dtype=object)}
    np.savez(tmp_path / "object.npz", **objects)  # numpy pickles the object array
    np.savez(tmp_path / "torch.npz", **{**data, "backend": np.array("torch")})
    header = io.BytesIO()  # a w_W1.npy whose header claims 10**6 x 10**6 float64s (8 TB)
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f8", "fortran_order": False, "shape": (10**6, 10**6)}
    )
    with zipfile.ZipFile(tmp_path / "huge.npz", "w") as z, zipfile.ZipFile(path) as good:
        for name in good.namelist():
            member = good.read(name)
            if name == "w_W1.npy":
                member = header.getvalue() + data["w_W1"].tobytes()
            z.writestr(name, member)
    return [
        ("object.npz", "W1 holds a Python object array, not numbers: not a pgrl"),
        ("torch.npz", "unknown backend 'torch', expected one of numpy, tensorflow"),
        ("huge.npz", "header claims shape (1000000, 1000000)"),
    ]


def test_damaged_checkpoints_are_named_for_what_they_are_not(cartpole_run, tmp_path):
    for name, fragment in _damaged(cartpole_run / "checkpoint.npz", tmp_path):
        bad = str(tmp_path / name)
        for args in (["eval", bad, "--episodes", "1"], ["export", bad, str(tmp_path / "w.npz")]):
            line = one_line_error(run_cli(*args), fragment)
            assert "allow_pickle" not in line, line
        assert not (tmp_path / "w.npz").exists()
        run = tmp_path / f"run-{name}"
        shutil.copytree(cartpole_run, run)
        shutil.copy(bad, run / "checkpoint.npz")
        before = {p.name: p.read_bytes() for p in run.iterdir()}
        args = ["train", CARTPOLE, "--out", str(run), "--resume", "--set", "train.episodes=40"]
        one_line_error(run_cli(*args), fragment)
        assert {p.name: p.read_bytes() for p in run.iterdir()} == before


def test_disk_full_before_the_run_starts_loses_nothing(tmp_path, monkeypatch, capsys):
    """No room for the lock file's pid: one line, no directory left behind, a run kept."""
    import errno

    import pgrl.rundir
    from pgrl.cli import main

    def full_disk(fd, data, offset):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    train(small(), out=tmp_path / "old")

    def files():
        return {p.name: p.read_bytes() for p in (tmp_path / "old").iterdir() if p.name != ".lock"}

    before = files()
    monkeypatch.setattr(pgrl.rundir.os, "pwrite", full_disk)
    for out, flags in ((tmp_path / "new", []), (tmp_path / "old", ["--resume"])):
        argv = ["train", CARTPOLE, "--out", str(out), "--set", "train.episodes=40", *flags]
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err == f"pgrl train: error: --out {out}: no space left on the device", err
    assert not (tmp_path / "new").exists()
    assert files() == before


def test_resume_with_another_number_of_env_slots_names_the_key(tmp_path):
    train(small("env.num_envs=4"), out=tmp_path)
    before = rows(tmp_path / "metrics.csv")
    args = ["train", CARTPOLE, "--out", str(tmp_path), "--resume", "--set", "train.episodes=40"]
    one_line_error(run_cli(*args, "--set", "env.num_envs=2"), "has 4 env slots", "env.num_envs")
    assert rows(tmp_path / "metrics.csv") == before


def test_init_through_the_cli_names_the_source_in_the_runs_config(cartpole_run, tmp_path):
    out = tmp_path / "run"
    args = ["train", CARTPOLE, "--out", str(out), "--set", "log.progress=false"]
    result = run_cli(*args, "--set", "train.episodes=30", "--init", str(cartpole_run))
    assert result.returncode == 0, result.stderr
    assert f'init = "{cartpole_run}"' in (out / "config.toml").read_text()
    assert len(rows(out / "metrics.csv")) == 30


def test_init_sets_weights_and_optimizer_state_before_the_first_update(
    cartpole_run, tmp_path, monkeypatch
):
    from pgrl.play import export_weights

    source = load_checkpoint(cartpole_run / "checkpoint.npz")
    weights_file = tmp_path / "w.npz"
    export_weights(cartpole_run / "checkpoint.npz", weights_file)  # float32, no RMSprop state
    for init, out in ((cartpole_run / "checkpoint.npz", "a"), (weights_file, "b")):
        with monkeypatch.context() as m:
            killed_after_start(m)
            with pytest.raises(SystemExit):
                train(small(f"train.init={init}", "train.seed=7"), out=tmp_path / out)
        start = load_checkpoint(tmp_path / out / "checkpoint.npz")  # the run's initial state
        assert start["state"]["updates"] == 0
        for name, w in source["weights"].items():
            expected = w if out == "a" else w.astype(np.float32).astype(w.dtype)
            np.testing.assert_array_equal(start["weights"][name], expected)
        step = int(start["optimizer_state"]["step"])
        if out == "a":  # a checkpoint's RMSprop state comes with its weights
            assert step == int(source["optimizer_state"]["step"])
            for k, v in source["optimizer_state"].items():
                np.testing.assert_array_equal(start["optimizer_state"][k], v)
        else:
            assert step == 0
    # resuming reads the run's checkpoint, not train.init (gone by now, or left out)
    weights_file.unlink()
    cfg = small(f"train.init={weights_file}", "train.seed=7")
    assert train(cfg, tmp_path / "b", resume=True)["episodes"] == 20
    resumed = train(small("train.seed=7", episodes=30), tmp_path / "b", resume=True)
    assert resumed["episodes"] == 30


def test_run_and_sweep_directories_are_told_apart(tmp_path):
    """A run never lands in a sweep's directory, nor a sweep in a run's, --force or not; and
    contradictory flags are refused before anything is touched."""
    (tmp_path / "sweep").mkdir()
    (tmp_path / "sweep" / "sweep.json").write_text("{}")
    for extra in ([], ["--force"]):
        one_line_error(
            run_cli("train", CARTPOLE, "--out", str(tmp_path / "sweep"), *extra),
            "holds a sweep (sweep.json)",
        )
    train(small(), out=tmp_path / "run")
    for extra in ([], ["--force"], ["--resume"]):
        args = ["--out", str(tmp_path / "run"), "--seeds", "0", "--backend", "numpy", *extra]
        one_line_error(
            run_cli("sweep", CARTPOLE, "--grid", "train.gamma=0.9,0.99", *args),
            "holds a pgrl train run",
        )
    compare_args = ["--seeds", "0", "--backends", "numpy", "--out"]
    for out, message in (("run", "holds a pgrl train run"), ("sweep", "holds a sweep")):
        before = sorted(p.name for p in (tmp_path / out).iterdir())
        one_line_error(run_cli("compare", CARTPOLE, *compare_args, str(tmp_path / out)), message)
        assert sorted(p.name for p in (tmp_path / out).iterdir()) == before
    live = RunDir(tmp_path / "live")  # a run that has just taken its lock
    live.prepare(small(), resume=False, overwrite=False)
    try:
        one_line_error(
            run_cli("sweep", CARTPOLE, "--grid", "train.gamma=0.9", "--seeds", "0", "--force",
                    "--out", str(tmp_path / "live")),
            "holds a pgrl train run",
        )  # fmt: skip
    finally:
        live.close()
    before = sorted(p.name for p in (tmp_path / "run").iterdir())
    one_line_error(
        run_cli("train", CARTPOLE, "--out", str(tmp_path / "run"), "--resume", "--force"),
        "--resume and --force: choose one",
    )
    one_line_error(
        run_cli("train", CARTPOLE, "--out", str(tmp_path / "run"), "--resume", "--init", "pong"),
        "--init starts a run from weights, --resume continues one",
    )
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == before


@pytest.mark.parametrize(
    "config, overrides",
    [
        (CARTPOLE, []),
        (CARTPOLE, ["policy.dtype=float32"]),
        (CARTPOLE, ["policy.reduction=mean", "train.baseline=value"]),
        (CARTPOLE, ["policy.backend=tensorflow"]),
        ("configs/acrobot.toml", []),
    ],
)
def test_a_dead_policy_stops_the_run_like_a_divergence(tmp_path, config, overrides):
    """Far too large a step saturates every logit: zero gradient and zero entropy from then on,
    a policy no update can change. The run stops after DEAD_UPDATES such updates, with a
    checkpoint of finite weights, instead of playing out its budget."""
    cfg = load_config(
        config,
        ["log.progress=false", "train.episodes=2000", "train.checkpoint_every=1",
         "optimizer.learning_rate=1e6", *overrides],
    )  # fmt: skip
    with pytest.raises(DivergedError, match="the policy is deterministic, with zero gradient"):
        train(cfg, out=tmp_path)
    ckpt = load_checkpoint(tmp_path / "checkpoint.npz")
    assert 1 <= ckpt["state"]["updates"] <= 2 * pgrl.reinforce.DEAD_UPDATES  # of 100
    assert all(np.isfinite(w).all() for w in ckpt["weights"].values())
