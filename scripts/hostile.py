"""Hostile-input campaign for the ``pgrl`` command: hundreds of bad inputs, each run as a
subprocess (``python -m pgrl ...``) in a temp directory of its own, with tiny budgets.

    python scripts/hostile.py                       # the full campaign (6-9 minutes, 2 cores)
    python scripts/hostile.py --quick               # a few cases of every class (< 1 minute)
    python scripts/hostile.py --classes npz kill --jobs 4 --report runs/hostile/report.json
    python scripts/hostile.py --list                # the cases, without running them

What pgrl promises a bad input: exit status 2 (or the status the case names) and exactly one
line on stderr naming the problem; never a traceback, an exit 0 (silent acceptance), a hang, a
changed run directory, or rows of metrics.csv / updates.csv lost or repeated across a kill and
``--resume``. Each case declares its expected exit status; an outcome is one of OUTCOMES.
The report (JSON and CSV, written atomically) lists every case; the exit status is 1 if any case
is not ok. Standard library and NumPy only (tqdm for the progress bar when it is installed).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import fcntl
import gzip
import hashlib
import io
import json
import os
import pickle
import random
import re
import shlex
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUTCOMES = (
    "ok",
    "traceback",  # a Python traceback on stdout or stderr
    "silent-acceptance",  # exit 0 where an error was due, or a success that did the wrong thing
    "hang",  # no exit within the case's timeout
    "corruption",  # a run directory changed by a failed command, or a file that does not parse
    "rows-lost",  # metrics.csv / updates.csv rows missing, repeated or changed after --resume
    "bad-message",  # an error, but not exactly one line naming the problem
    "wrong-exit",  # another nonzero exit status than the case expects
)
MAX_LINE = 2000  # characters: a longer error line is no clear one-line error
TINY = ["--set", "train.episodes=40", "--set", "log.progress=false"]
IGNORED = {".lock"}  # a run directory's lock file: taken and released by every command


@dataclass
class Case:
    """One hostile input: ``python -m pgrl *argv`` (or ``python -c argv[0]`` for ``api``) in a
    fresh directory prepared by ``setup(dir, fixtures)``."""

    cls: str
    name: str
    argv: list[str]
    expect: tuple[int, ...] = (2,)  # acceptable exit statuses
    setup: Callable[[Path, Path], None] | None = None
    names: tuple[str, ...] = ()  # an error line must contain each of these
    guard: str | None = None  # a directory (relative) that the command must leave unchanged
    fresh: str | None = None  # a new --out that a failed command must leave without a run
    check: Callable[[Path, Path, Result], tuple[str, str] | None] | None = None
    runner: Callable[[Case, Path, Path], tuple[str, str, Result]] | None = None
    needs: tuple[str, ...] = ()  # fixtures
    timeout: float = 60.0
    api: bool = False  # argv[0] is a Python program
    quick: bool = False
    seed: int = 0  # for cases that draw random times

    @property
    def id(self) -> str:
        return f"{self.cls}/{self.name}"

    def command(self) -> list[str]:
        if self.api:
            return [sys.executable, "-c", self.argv[0]]
        return [sys.executable, "-m", "pgrl", *self.argv]


@dataclass
class Result:
    code: int | None
    stdout: str
    stderr: str
    seconds: float
    timed_out: bool = False


def run(cmd: list[str], cwd: Path, timeout: float, env: dict | None = None) -> Result:
    """Run ``cmd`` in its own process group; on timeout the whole group is killed."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        cwd=cwd,
        env=env or child_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
        timed_out = False
    except subprocess.TimeoutExpired:
        kill_group(proc)
        out, err = proc.communicate()
        timed_out = True
    kill_group(proc)  # children left behind by a killed parent
    text = (out.decode(errors="replace"), err.decode(errors="replace"))
    return Result(proc.returncode, *text, time.perf_counter() - t0, timed_out)


def kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)


def child_env() -> dict:
    """The environment of every pgrl process: this checkout first on the path, quiet TF."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    env.pop("RAY_ADDRESS", None)
    return env


# ---------------------------------------------------------------------------------------------
# Classification


def error_lines(stderr: str) -> list[str]:
    """stderr's lines as a terminal shows them (a progress bar's redraws collapse to one)."""
    lines = (line.rsplit("\r", 1)[-1].strip() for line in stderr.split("\n"))
    return [line for line in lines if line]


def traceback_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    start = max(i for i, line in enumerate(lines) if line.startswith("Traceback"))
    tail = [line for line in lines[start:] if not line.startswith(" ")]
    return tail[-1][:300] if tail else lines[-1][:300]


def classify(case: Case, res: Result) -> tuple[str, str]:
    """(outcome, detail) of a finished command against the case's expectation."""
    if res.timed_out:
        return "hang", f"no exit within {case.timeout:g} s"
    text = res.stdout + res.stderr
    if "Traceback (most recent call last)" in text:
        return "traceback", traceback_line(text)
    lines = error_lines(res.stderr)
    first = lines[0][:300] if lines else ""
    if res.code not in case.expect:
        if res.code == 0:
            return "silent-acceptance", f"exit 0, expected {show_expect(case)}"
        if 0 in case.expect and len(case.expect) == 1:
            return "wrong-exit", f"exit {res.code}, expected 0: {first}"
        return "wrong-exit", f"exit {res.code}, expected {show_expect(case)}: {first}"
    # exit 2 is a bad input; other statuses are results where the case accepts a success
    if (res.code == 2 or 0 not in case.expect) and res.code != 0 and not case.api:
        if len(lines) != 1:
            return "bad-message", f"{len(lines)} lines on stderr: {' | '.join(lines)[:300]}"
        if re.search(r"[\x00-\x08\x0b-\x1f\x7f]", res.stderr.rstrip("\n")):
            return "bad-message", f"control characters on stderr: {res.stderr[:200]!r}"
        if len(lines[0]) > MAX_LINE:
            return "bad-message", f"a line of {len(lines[0]):,} characters: {first[:200]}"
        if not lines[0].startswith("pgrl"):
            return "bad-message", f"not a pgrl error line: {first}"
        missing = [n for n in case.names if n not in lines[0]]
        if missing:
            return "bad-message", f"does not name {missing[0]!r}: {first}"
    return "ok", first if res.code else ""


def show_expect(case: Case) -> str:
    return " or ".join(map(str, case.expect))


def digest(path: Path) -> dict[str, str]:
    """{relative name: sha256} of every file under ``path`` (a missing path: {})."""
    if path.is_file():
        return {"": hashlib.sha256(path.read_bytes()).hexdigest()}
    out = {}
    for p in sorted(path.rglob("*")) if path.is_dir() else ():
        if p.is_file() and p.name not in IGNORED:
            out[str(p.relative_to(path))] = hashlib.sha256(p.read_bytes()).hexdigest()
        elif p.is_dir() or p.is_symlink():
            out[str(p.relative_to(path)) + "/"] = "dir" if p.is_dir() else "link"
    return out


def changed(before: dict, after: dict) -> str:
    names = sorted(set(before) | set(after))
    diff = [n for n in names if before.get(n) != after.get(n)]
    what = {
        n: "removed" if n not in after else "added" if n not in before else "changed" for n in diff
    }
    return ", ".join(f"{n or 'the file'} {what[n]}" for n in diff[:4])


def execute(case: Case, work: Path, fixtures: Path) -> dict:
    """Prepare, run and classify one case in ``work``; its report row."""
    t0 = time.perf_counter()
    try:
        if case.setup is not None:
            case.setup(work, fixtures)
        if case.runner is not None:
            outcome, detail, res = case.runner(case, work, fixtures)
        else:
            guard = work / case.guard if case.guard else None
            before = digest(guard) if guard else None
            res = run(case.command(), work, case.timeout)
            outcome, detail = classify(case, res)
            if outcome == "ok" and guard is not None:
                diff = changed(before, digest(guard))
                if diff:
                    outcome, detail = "corruption", f"{case.guard}: {diff}"
            if outcome == "ok" and case.fresh and res.code != 0:
                left = [
                    n for n in ("metrics.csv", "checkpoint.npz") if (work / case.fresh / n).exists()
                ]
                if left:
                    outcome, detail = "corruption", f"a failed run left {', '.join(left)} behind"
            if outcome == "ok" and case.check is not None:
                found = case.check(work, fixtures, res)
                if found is not None:
                    outcome, detail = found
    except Exception as e:  # a broken case is reported, not the campaign stopped
        outcome, detail = "error", f"the case itself failed: {type(e).__name__}: {e}"
        res = Result(None, "", "", time.perf_counter() - t0)
    return {
        "class": case.cls,
        "case": case.name,
        "outcome": outcome,
        "expected": show_expect(case),
        "exit": res.code,
        "seconds": round(time.perf_counter() - t0, 2),
        "detail": detail,
        "command": show_command(case),
    }


def show_command(case: Case) -> str:
    parts = [p.strip().replace("\n", "; ") for p in case.command()[1:]]
    parts = ["python", *(p if len(p) <= 120 else f"{p[:60]}...({len(p):,} chars)" for p in parts)]
    return shlex.join(parts)


# ---------------------------------------------------------------------------------------------
# Fixtures: runs, weights and sweeps that cases copy or read


def kill_config(episodes: int, batch: int, every: int, extra: str = "", env: str = "") -> str:
    """A CartPole config that trains a few seconds, with no goal to stop it early."""
    return f"""[env]
id = "CartPole-v1"
num_envs = {batch}
{env}
[policy]
hidden_sizes = [32]
bias = true
[optimizer]
learning_rate = 0.01
[train]
episodes = {episodes}
batch_episodes = {batch}
standardize = "batch"
checkpoint_every = {every}
{extra}
[log]
progress = false
"""


# kill variant -> (episodes, batch_episodes, checkpoint_every, [train] lines, [env] lines)
KILL_VARIANTS = {
    "every1": (300, 5, 1, "", ""),
    "every7": (300, 5, 7, "", ""),
    "every20": (300, 10, 20, "", ""),
    "baseline": (300, 5, 3, 'baseline = "value"', ""),
    "onenv": (150, 1, 4, "", ""),
    "processes": (200, 4, 2, "", 'runner = "processes"\nnum_workers = 2\nenvs_per_worker = 2'),
}


def fixture_commands() -> dict[str, list[list[str]]]:
    """name -> the pgrl commands that build it in the fixtures directory, in order."""
    fixtures = {
        "run": [["train", "cartpole", *TINY, "--out", "run"]],
        "weights": [["export", "run/checkpoint.npz", "weights.npz"]],
        "run_cat": [
            ["train", "cartpole", *TINY, "--set", "policy.head=categorical", "--out", "run_cat"]
        ],
        "run_h16": [
            ["train", "cartpole", *TINY, "--set", "policy.hidden_sizes=[16]", "--out", "run_h16"]
        ],
        "run_acrobot": [
            ["train", "acrobot", "--set", "train.episodes=2", "--set", "log.progress=false"]
            + ["--out", "run_acrobot"]
        ],
        "sweep": [
            ["sweep", "cartpole", "--grid", "train.batch_episodes=10,20", "--workers", "1"]
            + ["--set", "train.episodes=20", "--set", "log.progress=false", "--out", "sweep"]
        ],
    }
    for name in KILL_VARIANTS:
        fixtures[f"ref_{name}"] = [["train", f"kill_{name}.toml", "--out", f"ref_{name}"]]
    return fixtures


# fixtures that others are built from
FIXTURE_NEEDS = {"weights": ("run",), **{f"ref_{n}": () for n in KILL_VARIANTS}}


def build_fixtures(names: set[str], fixtures: Path) -> None:
    commands = fixture_commands()
    for name, text in diagnose_files().items():
        np.savez(fixtures / f"{name}.npz", **text)
    for name, variant in KILL_VARIANTS.items():
        (fixtures / f"kill_{name}.toml").write_text(kill_config(*variant))
    wanted = set(names)
    for name in list(wanted):
        wanted.update(FIXTURE_NEEDS.get(name, ()))
    for name in commands:  # in their order: weights after run
        if name not in wanted:
            continue
        for argv in commands[name]:
            res = run([sys.executable, "-m", "pgrl", *argv], fixtures, 300)
            if res.code != 0:
                raise SystemExit(
                    f"hostile.py: fixture {name} failed (exit {res.code}): "
                    f"{' '.join(argv)}\n{res.stderr[-2000:]}"
                )


def diagnose_files() -> dict[str, dict[str, np.ndarray]]:
    """A small well-formed diagnose input: weights (4 -> 8 -> 1), a batch of 6, gradients."""
    rng = np.random.default_rng(0)
    w = {"W1": rng.standard_normal((4, 8)) / 2, "W2": rng.standard_normal((8, 1)) / 3}
    batch = {
        "obs": rng.standard_normal((6, 4)),
        "actions": np.array([0, 1, 1, 0, 1, 0]),
        "advantages": rng.standard_normal(6),
    }
    grads = {k: rng.standard_normal(v.shape) for k, v in w.items()}
    after = {k: v - 1e-3 * np.sign(grads[k]) for k, v in w.items()}
    return {"diag_W": w, "diag_B": batch, "diag_G": grads, "diag_A": after}


# ---------------------------------------------------------------------------------------------
# Setup steps: each returns setup(dir, fixtures)


def copy(*names: str) -> Callable[[Path, Path], None]:
    """Copy fixtures (files or directories) into the case's directory."""

    def setup(work: Path, fixtures: Path) -> None:
        for name in names:
            source = fixtures / name
            if source.is_dir():
                shutil.copytree(source, work / name, symlinks=True)
            else:
                shutil.copy2(source, work / name)

    return setup


def write(name: str, content: bytes | str | Callable[[Path], bytes]) -> Callable:
    """Write a file into the case's directory (``content(fixtures)``: computed from fixtures)."""

    def setup(work: Path, fixtures: Path) -> None:
        data = content(fixtures) if callable(content) else content
        path = work / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode() if isinstance(data, str) else data)

    return setup


def steps(*setups: Callable | None) -> Callable:
    def setup(work: Path, fixtures: Path) -> None:
        for s in setups:
            if s is not None:
                s(work, fixtures)

    return setup


def act(f: Callable[[Path], object]) -> Callable:
    """A setup step that only needs the case's directory."""
    return lambda work, fixtures: f(work)


def with_config(body: str, name: str = "cfg.toml") -> Callable:
    return write(name, body)


# ---------------------------------------------------------------------------------------------
# Checks of a command that succeeded: (outcome, detail) or None


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def check_rows(run_dir: Path, episodes: int | None = None, ref: Path | None = None):
    """metrics.csv numbers episodes 1..E and updates.csv updates 1..U, both end where
    summary.json says, and (with ``ref``) hold the reference run's numbers exactly."""
    try:
        metrics = read_csv(run_dir / "metrics.csv")
        updates = read_csv(run_dir / "updates.csv")
        summary = json.loads((run_dir / "summary.json").read_text())
        [float(r["return"]) for r in metrics]
    except (OSError, ValueError, KeyError, csv.Error) as e:
        return "corruption", f"{run_dir.name}: a file does not parse: {type(e).__name__}: {e}"
    numbers = [int(r["episode"]) for r in metrics]
    if numbers != list(range(1, len(numbers) + 1)):
        return "rows-lost", f"metrics.csv episodes are {compress(numbers)}"
    count = [int(r["update"]) for r in updates]
    if count != list(range(1, len(count) + 1)):
        return "rows-lost", f"updates.csv updates are {compress(count)}"
    if summary.get("episodes") != len(metrics) or summary.get("updates") != len(updates):
        return "rows-lost", (
            f"summary.json says {summary.get('episodes')} episodes, {summary.get('updates')} "
            f"updates; the CSVs hold {len(metrics)}, {len(updates)}"
        )
    if episodes is not None and len(metrics) != episodes:
        return "rows-lost", f"metrics.csv holds {len(metrics)} episodes, expected {episodes}"
    if ref is not None:
        return compare_runs(run_dir, ref)
    return None


TIMING = {
    "wall_time",
    "rollout_seconds",
    "update_seconds",
    "broadcast_seconds",
    "transfer_seconds",
    "gradient_seconds",
}


def compare_runs(run_dir: Path, ref: Path):
    """The same rows as the uninterrupted reference run, timing columns aside."""
    for name in ("metrics.csv", "updates.csv"):
        got, want = read_csv(run_dir / name), read_csv(ref / name)
        if len(got) != len(want):
            return "rows-lost", f"{name}: {len(got)} rows, the uninterrupted run {len(want)}"
        for i, (a, b) in enumerate(zip(got, want, strict=True), 1):
            diff = [k for k in b if k not in TIMING and a.get(k) != b[k]]
            if diff:
                k = diff[0]
                return "rows-lost", f"{name} row {i}: {k} {a.get(k)} != {b[k]} (uninterrupted)"
    return None


def compress(numbers: list[int]) -> str:
    """``[1, 2, 3, 7, 8]`` -> ``"1-3, 7-8"`` (at most a few ranges)."""
    ranges, start = [], None
    for i, n in enumerate(numbers):
        if start is None:
            start = n
        if i + 1 == len(numbers) or numbers[i + 1] != n + 1:
            ranges.append(f"{start}-{n}" if n != start else str(n))
            start = None
    return ", ".join(ranges[:6]) + (" ..." if len(ranges) > 6 else "")


def rows_ok(run_dir: str, episodes: int | None = None, ref: str | None = None) -> Callable:
    def check(work: Path, fixtures: Path, res: Result):
        return check_rows(work / run_dir, episodes, fixtures / ref if ref else None)

    return check


def warned(word: str) -> Callable:
    """A command that went on must have said why on stderr."""

    def check(work: Path, fixtures: Path, res: Result):
        if res.code == 0 and word not in res.stderr:
            return "silent-acceptance", f"exit 0 without a warning naming {word}"
        return None

    return check


def toml_ok(path: str) -> Callable:
    import tomllib

    def check(work: Path, fixtures: Path, res: Result):
        try:
            tomllib.loads((work / path).read_text())
        except (OSError, ValueError) as e:
            return "corruption", f"{path} is no valid TOML: {e}"
        return None

    return check


# ---------------------------------------------------------------------------------------------
# Class: bad config files (syntax, encodings, file kinds)


def deep(opening: str, closing: str, n: int) -> str:
    return opening * n + closing * n


CONFIG_SYNTAX: dict[str, tuple[bytes, tuple[int, ...]]] = {
    "unclosed-table": (b"[train\nseed = 1\n", (2,)),
    "unclosed-array": (b"[policy]\nhidden_sizes = [32, 32\n", (2,)),
    "unclosed-string": (b'[env]\nid = "CartPole-v1\n', (2,)),
    "unclosed-multiline-string": (b'[env]\nid = """CartPole-v1\n', (2,)),
    "unclosed-inline-table": (b"[env]\nkwargs = {a = 1\n", (2,)),
    "bare-word-value": (b"[train]\nseed = one\n", (2,)),
    "missing-value": (b"[train]\nseed =\n", (2,)),
    "missing-equals": (b"[train]\nseed 1\n", (2,)),
    "duplicate-key": (b"[train]\nseed = 1\nseed = 2\n", (2,)),
    "duplicate-table": (b"[train]\nseed = 1\n[train]\nepisodes = 2\n", (2,)),
    "dotted-then-table": (b"train.seed = 1\n[train]\nepisodes = 3\n", (2,)),
    "bad-escape": (b'[env]\nid = "Cart\\qPole-v1"\n', (2,)),
    "invalid-utf8": (b'[env]\nid = "\xff\xfe"\n', (2,)),
    "utf16": ("[train]\nepisodes = 40\n".encode("utf-16"), (2,)),
    "utf8-bom": (b"\xef\xbb\xbf[train]\nepisodes = 40\n", (0, 2)),
    "nul-byte": (b"[train]\nseed = 1\x00\n", (2,)),
    "binary-garbage": (np.random.default_rng(1).bytes(4096), (2,)),
    "gzip": (gzip.compress(b"[train]\nepisodes = 40\n"), (2,)),
    "png-header": (b"\x89PNG\r\n\x1a\n" + bytes(64), (2,)),
    "json": (b'{"train": {"episodes": 40}}', (2,)),
    "yaml": (b"train:\n  episodes: 40\n", (2,)),
    "ini-colon": (b"[train]\nepisodes: 40\n", (2,)),
    "lone-cr": (b"[train]\repisodes = 40\r", (0, 2)),  # read as text: universal newlines
    "huge-int": (b"[train]\nseed = " + b"9" * 5000 + b"\n", (2,)),
    "huge-float": (b"[train]\nseed = 1e999\n", (2,)),
    "deep-arrays": (f"[env]\nkwargs = {{a = {deep('[', ']', 50000)}}}\n".encode(), (2,)),
    "deep-inline-tables": (b"[env]\nkwargs = " + b"{a = " * 20000 + b"1" + b"}" * 20000, (2,)),
    "deep-dotted-key": (b"[env]\n" + b".".join([b"k"] * 20000) + b" = 1\n", (2,)),
    "datetime-seed": (b"[train]\nseed = 1979-05-27T07:32:00Z\n", (2,)),
    "time-gamma": (b"[train]\ngamma = 07:32:00\n", (2,)),
    "array-of-tables": (b"[[train]]\nseed = 1\n", (2,)),
    "top-level-key": (b"seed = 1\n", (2,)),
    "section-as-value": (b"train = 3\n", (2,)),
    "dotted-through-value": (b"train.seed.x = 1\n", (2,)),
    "key-with-space": (b'[train]\n"episodes " = 40\n', (2,)),
    "unicode-key": ('[train]\n"épisodes" = 40\n'.encode(), (2,)),
    "empty-section-name": (b'[""]\nk = 1\n', (2,)),
    "subtable": (b"[train.extra]\nk = 1\n", (2,)),
    "long-key": (b"[train]\n" + b"k" * 1_000_000 + b" = 1\n", (2,)),
    "long-section": (b"[" + b"s" * 1_000_000 + b"]\nk = 1\n", (2,)),
    "long-string-value": (b'[env]\nid = "' + b"C" * 1_000_000 + b'-v1"\n', (2,)),
    "many-kwargs": (
        b"[env.kwargs]\n" + b"".join(b"k%d = 1\n" % i for i in range(20000)),
        (2,),
    ),
    # valid files: pgrl runs them (a tiny budget comes from --set)
    "empty-file": (b"", (0,)),
    "comments-only": (b"# nothing here\n\n", (0,)),
    "crlf": (b"[train]\r\nepisodes = 40\r\n[log]\r\nprogress = false\r\n", (0,)),
    "inline-sections": (b"train = {episodes = 40}\nlog = {progress = false}\n", (0,)),
    "long-comment-line": (b"# " + b"x" * 5_000_000 + b"\n[train]\nepisodes = 40\n", (0,)),
    "hex-int": (b"[train]\nepisodes = 0x28\nseed = 0o7\n", (0,)),
}

# what a syntax error's line must name besides the file
SYNTAX_NAMES = {
    "duplicate-key": "line 3",
    "top-level-key": "seed",
    "long-key": "train.",
    "long-section": "unknown",
    "many-kwargs": "env",
    "long-string-value": "env",
}
# errors that come from making the env, which name the env rather than the file
SYNTAX_ENV_ERRORS = {"many-kwargs", "long-string-value"}


def special_config(kind: str) -> Callable:
    def setup(work: Path, fixtures: Path) -> None:
        path = work / "cfg.toml"
        if kind == "directory":
            path.mkdir()
        elif kind == "fifo":
            os.mkfifo(path)
        elif kind == "symlink-loop":
            path.symlink_to("cfg.toml")
        elif kind == "dangling-symlink":
            path.symlink_to("nowhere.toml")
        elif kind == "dev-null":
            path.symlink_to("/dev/null")
        elif kind == "dev-zero":
            path.symlink_to("/dev/zero")

    return setup


def config_syntax_cases() -> list[Case]:
    cases = []
    for i, (name, (content, expect)) in enumerate(CONFIG_SYNTAX.items()):
        names = () if name in SYNTAX_ENV_ERRORS else ("cfg.toml",)
        names += (SYNTAX_NAMES[name],) if name in SYNTAX_NAMES else ()
        check = rows_ok("run", 40) if expect == (0,) else None
        cases.append(
            Case(
                "config-syntax",
                f"train-{name}",
                ["train", "cfg.toml", *TINY, "--out", "run"],
                expect,
                write("cfg.toml", content),
                names=names if 0 not in expect else (),
                fresh="run",
                check=check,
                quick=i < 2,
            )
        )
    for name in ("unclosed-table", "invalid-utf8", "deep-arrays", "huge-int", "long-key"):
        for command in (["check", "cfg.toml"], ["compare", "cfg.toml", "--out", "cmp"]):
            content, expect = CONFIG_SYNTAX[name]
            cases.append(
                Case(
                    "config-syntax",
                    f"{command[0]}-{name}",
                    command,
                    expect,
                    write("cfg.toml", content),
                    names=("cfg.toml",),
                )
            )
    for kind in ("directory", "fifo", "symlink-loop", "dangling-symlink", "dev-null", "dev-zero"):
        for command in ("train", "check", "sweep"):
            cases.append(
                Case(
                    "config-syntax",
                    f"{command}-{kind}",
                    [command, "cfg.toml", *(["--out", "o"] if command != "check" else [])],
                    (2,),
                    special_config(kind),
                    names=("cfg.toml",),
                    timeout=30,
                )
            )
    for name, arg in (
        ("missing-file", "nosuch.toml"),
        ("missing-shipped-name", "cartpol"),
        ("empty-argument", ""),
        ("path-to-shipped-name", "./cartpole"),
        ("dash", "-"),
        ("shipped-dir", "configs/"),
    ):
        cases.append(Case("config-syntax", f"train-{name}", ["train", arg, "--out", "o"], (2,)))
    return cases


# ---------------------------------------------------------------------------------------------
# Class: wrong types, out-of-range values, unknown keys (in a config file)

# section.key -> kind, as pgrl.config declares them
KEYS = {
    "env.id": "str",
    "env.num_envs": "int",
    "env.runner": "str",
    "env.num_workers": "int",
    "env.envs_per_worker": "int",
    "env.kwargs": "table",
    "env.actions": "strs",
    "policy.backend": "str",
    "policy.hidden_sizes": "ints",
    "policy.dtype": "str",
    "policy.bias": "bool",
    "policy.reduction": "str",
    "policy.head": "str",
    "optimizer.learning_rate": "float",
    "optimizer.decay": "float",
    "optimizer.epsilon": "float",
    "optimizer.epsilon_inside_sqrt": "bool",
    "optimizer.entropy_coef": "float",
    "optimizer.max_grad_norm": "float",
    "value.hidden_sizes": "ints",
    "value.bias": "bool",
    "value.learning_rate": "float",
    "value.decay": "float",
    "value.epsilon": "float",
    "value.epsilon_inside_sqrt": "bool",
    "value.max_grad_norm": "float",
    "value.steps": "int",
    "value.bootstrap": "bool",
    "ppo.clip": "float",
    "ppo.epochs": "int",
    "ppo.minibatch_size": "int",
    "ppo.gae_lambda": "float",
    "ppo.normalize_advantages": "bool",
    "ppo.target_kl": "float",
    "ppo.clip_value": "float",
    "train.algorithm": "str",
    "train.seed": "int",
    "train.episodes": "int",
    "train.batch_episodes": "int",
    "train.gamma": "float",
    "train.reset_on_nonzero": "bool",
    "train.standardize": "str",
    "train.baseline": "str",
    "train.solved_mean100": "float",
    "train.max_steps": "int",
    "train.max_seconds": "float",
    "train.checkpoint_every": "int",
    "train.init": "str",
    "log.progress": "bool",
    "log.tensorboard": "bool",
}
# kind -> TOML values of the wrong type
WRONG_TYPES = {
    "int": ['"3"', "3.5", "true", "[3]", "{a = 1}", "1979-05-27"],
    "float": ['"0.1"', "true", "[0.1]", "{a = 1}", "07:32:00"],
    "bool": ["1", '"true"', "0.0", "[true]"],
    "str": ["1", "true", '["numpy"]', "{a = 1}"],
    "ints": ["32", "[32.5]", '["32"]', "[true]", "[[32]]", "{a = 1}"],
    "table": ["1", '"a"', "[1]"],
    "strs": ['"NOOP"', "[1]", '[["UP"]]', "{a = 1}"],
}


def config_line(key: str, value: str) -> str:
    section, name = key.split(".", 1)
    return f"[{section}]\n{name} = {value}\n"


def config_type_cases() -> list[Case]:
    cases = []
    for key, kind in KEYS.items():
        for j, value in enumerate(WRONG_TYPES[kind]):
            cases.append(
                Case(
                    "config-types",
                    f"{key}={value}",
                    ["train", "cfg.toml", "--out", "run"],
                    (2,),
                    with_config(config_line(key, value)),
                    names=(key, "cfg.toml"),
                    fresh="run",
                    quick=j == 0 and key in ("train.seed", "policy.hidden_sizes"),
                )
            )
    return cases


# (key, TOML value, expected exit statuses)
RANGES = [
    ("env.num_envs", "0", (2,)),
    ("env.num_envs", "-1", (2,)),
    ("env.num_envs", "100000000000", (2,)),
    ("env.num_workers", "0", (2,)),
    ("env.envs_per_worker", "-2", (2,)),
    ("policy.hidden_sizes", "[0]", (2,)),
    ("policy.hidden_sizes", "[-3]", (2,)),
    ("policy.hidden_sizes", "[32, 0]", (2,)),
    ("policy.hidden_sizes", "[100000000000]", (2,)),
    ("policy.hidden_sizes", "[1000000, 1000000]", (2,)),
    ("policy.hidden_sizes", "[1" + "0" * 30 + "]", (2,)),
    ("value.hidden_sizes", "[0]", (2,)),
    ("optimizer.learning_rate", "0", (2,)),
    ("optimizer.learning_rate", "-1e-3", (2,)),
    ("optimizer.learning_rate", "nan", (2,)),
    ("optimizer.learning_rate", "inf", (2,)),
    ("optimizer.learning_rate", "-inf", (2,)),
    ("optimizer.decay", "1.0", (2,)),
    ("optimizer.decay", "-0.1", (2,)),
    ("optimizer.decay", "nan", (2,)),
    ("optimizer.epsilon", "0", (2,)),
    ("optimizer.epsilon", "-1", (2,)),
    ("optimizer.epsilon", "inf", (2,)),
    ("optimizer.entropy_coef", "-0.1", (2,)),
    ("optimizer.entropy_coef", "nan", (2,)),
    ("optimizer.max_grad_norm", "0", (2,)),
    ("optimizer.max_grad_norm", "-1", (2,)),
    ("optimizer.max_grad_norm", "inf", (2,)),
    ("value.learning_rate", "0", (2,)),
    ("value.decay", "1", (2,)),
    ("value.epsilon", "0", (2,)),
    ("value.steps", "0", (2,)),
    ("value.max_grad_norm", "-0.5", (2,)),
    ("ppo.clip", "0", (2,)),
    ("ppo.clip", "1", (2,)),
    ("ppo.clip", "-0.2", (2,)),
    ("ppo.clip", "nan", (2,)),
    ("ppo.epochs", "0", (2,)),
    ("ppo.minibatch_size", "0", (2,)),
    ("ppo.gae_lambda", "1.5", (2,)),
    ("ppo.gae_lambda", "-0.1", (2,)),
    ("ppo.target_kl", "0", (2,)),
    ("ppo.target_kl", "inf", (2,)),
    ("ppo.clip_value", "-1", (2,)),
    ("train.algorithm", '"a2c"', (2,)),
    ("train.algorithm", '"PPO"', (2,)),
    ("train.algorithm", '"ppo"', (2,)),  # without train.baseline = "value"
    ("train.seed", "-1", (2,)),
    ("train.episodes", "0", (2,)),
    ("train.episodes", "-5", (2,)),
    ("train.batch_episodes", "0", (2,)),
    ("train.gamma", "0", (2,)),
    ("train.gamma", "-0.5", (2,)),
    ("train.gamma", "1.01", (2,)),
    ("train.gamma", "nan", (2,)),
    ("train.gamma", "inf", (2,)),
    ("train.solved_mean100", "nan", (2,)),
    ("train.solved_mean100", "inf", (2,)),
    ("train.solved_mean100", "-inf", (2,)),
    ("train.solved_mean100", "0", (2,)),
    ("train.solved_mean100", "1.0", (2,)),
    ("train.max_steps", "0", (2,)),
    ("train.max_steps", "-1", (2,)),
    ("train.max_seconds", "0", (2,)),
    ("train.max_seconds", "-1", (2,)),
    ("train.max_seconds", "nan", (2,)),
    ("train.max_seconds", "inf", (2,)),
    ("train.checkpoint_every", "0", (2,)),
    ("train.checkpoint_every", "-1", (2,)),
    ("train.init", '""', (2,)),
    ("train.init", '"   "', (2,)),
    ("train.init", '"nosuch.npz"', (2,)),
    ("policy.backend", '"torch"', (2,)),
    ("policy.backend", '""', (2,)),
    ("policy.backend", '"NumPy"', (2,)),
    ("policy.dtype", '"float16"', (2,)),
    ("policy.reduction", '"avg"', (2,)),
    ("policy.head", '"gaussian"', (2,)),
    ("train.standardize", '"global"', (2,)),
    ("train.baseline", '"critic"', (2,)),
    ("env.runner", '"mpi"', (2,)),
    ("env.vectorization", '"threads"', (2,)),
    ("env.id", '""', (2,)),
    ("env.id", '"CartPole-v1 "', (2,)),
    ("env.id", '"CartPole-v1\\u0000"', (2,)),
    # extreme but valid: the run trains (tiny budget) and writes a readable run
    ("train.seed", "18446744073709551616", (0,)),
    ("train.max_steps", "1", (0,)),
    ("train.max_seconds", "1e-9", (0,)),
    ("train.checkpoint_every", "1000000000", (0,)),
    ("train.batch_episodes", "1000000", (0,)),
    ("train.gamma", "1", (0,)),
    ("policy.hidden_sizes", "[]", (0,)),
    ("policy.hidden_sizes", "[1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]", (0,)),
    ("optimizer.max_grad_norm", "1e-300", (0,)),
    ("optimizer.epsilon", "1e-300", (0,)),
]


# extreme but valid PPO settings: the run trains and writes a readable run
PPO_EXTREMES = [
    ("ppo.minibatch_size", "1000000000"),  # one minibatch: the whole batch
    ("ppo.minibatch_size", "1"),
    ("ppo.epochs", "1"),
    ("ppo.gae_lambda", "0"),
    ("ppo.gae_lambda", "1"),
    ("ppo.target_kl", "1e-300"),  # every batch stops after its first minibatch
    ("ppo.clip", "1e-9"),
    ("ppo.clip_value", "1e-300"),
    ("ppo.normalize_advantages", "false"),
]
PPO_BODY = '[train]\nalgorithm = "ppo"\nbaseline = "value"\n'


def budget(key: str) -> list[str]:
    """TINY, unless the key under test is the budget itself."""
    return TINY if key != "train.episodes" else ["--set", "log.progress=false"]


def config_range_cases() -> list[Case]:
    cases = []
    for i, (key, value, expect) in enumerate(RANGES):
        body = config_line(key, value)
        cases.append(
            Case(
                "config-ranges",
                f"{key}={value[:40]}",
                ["train", "cfg.toml", *budget(key), "--out", "run"],
                expect,
                with_config(body),
                names=(key.split(".")[-1],) if expect != (0,) else (),
                fresh="run",
                check=(rows_ok("run") if expect == (0,) else None),
                quick=i in (0, 14),
            )
        )
    for key, value in PPO_EXTREMES:
        section, name = key.split(".", 1)
        cases.append(
            Case(
                "config-ranges",
                f"ppo with {key}={value}",
                ["train", "cfg.toml", *TINY, "--out", "run"],
                (0,),
                with_config(f"{PPO_BODY}[{section}]\n{name} = {value}\n"),
                fresh="run",
                check=rows_ok("run"),
                quick=key == "ppo.target_kl",
            )
        )
    return cases


UNKNOWN = [
    ("[trainer]\nseed = 1\n", "trainer"),
    ("[train]\nepsiodes = 10\n", "epsiodes"),
    ("[policy]\nhidden_size = [32]\n", "hidden_size"),
    ("[optimizer]\nlr = 0.1\n", "lr"),
    ("[optimizer]\nmomentum = 0.9\n", "momentum"),
    ("[env]\nname = 'CartPole-v1'\n", "name"),
    ("[log]\nlevel = 'debug'\n", "level"),
    ("[value]\nsteps_per_update = 3\n", "steps_per_update"),
    ("[Train]\nseed = 1\n", "Train"),
    ("[TRAIN]\nseed = 1\n", "TRAIN"),
    ("[ train ]\nSeed = 1\n", "Seed"),
    ("[train]\n'train.seed' = 1\n", "train.seed"),
    ("[policy]\nactivation = 'tanh'\n", "activation"),
    ("[ppo]\nclip_range = 0.2\n", "clip_range"),
    ("[a2c]\nn_steps = 5\n", "a2c"),
    ("[env]\nkwargs.max_episode_steps = 10\nid = 'CartPole-v1'\nfoo = 1\n", "foo"),
]


def config_unknown_cases() -> list[Case]:
    cases = []
    for i, (body, name) in enumerate(UNKNOWN):
        cases.append(
            Case(
                "config-unknown",
                f"file-{name}",
                ["train", "cfg.toml", "--out", "run"],
                (2,),
                with_config(body),
                names=(name, "cfg.toml"),
                fresh="run",
                quick=i == 0,
            )
        )
    for text, name in (
        ("trainer.seed=1", "trainer"),
        ("train.epsiodes=10", "epsiodes"),
        ("policy.hidden_size=[8]", "hidden_size"),
        ("env.kwargs.max_episode_steps=5", "kwargs.max_episode_steps"),
        ("train.seed.x=1", "seed.x"),
        ("train.=1", "train."),
    ):
        for command in ("train", "check", "compare", "sweep"):
            out = ["--out", "o"] if command != "check" else []
            cases.append(
                Case(
                    "config-unknown",
                    f"{command}-set-{name}",
                    [command, "cartpole", "--set", text, *out],
                    (2,),
                    names=(name,),
                )
            )
    return cases


# ---------------------------------------------------------------------------------------------
# Class: environments: unknown ids, continuous and non-flat spaces, bad kwargs and actions

ENVS = [
    ("env.id=CartPole-v9", "CartPole-v9"),
    ("env.id=cartpole", "cartpole"),
    ("env.id=Foo-v1", "Foo-v1"),
    ("env.id=CartPole", "CartPole"),
    ("env.id=ALE/Breakout-v5", "Breakout"),
    ("env.id=ALE/Pong-v4", "Pong-v4"),
    ("env.id=Pong-v5", "Pong-v5"),
    ("env.id=Pendulum-v1", "Pendulum-v1"),
    ("env.id=MountainCarContinuous-v0", "MountainCarContinuous-v0"),
    ("env.id=Taxi-v3", "Taxi-v3"),
    ("env.id=FrozenLake-v1", "FrozenLake-v1"),
    ("env.id=CliffWalking-v1", "CliffWalking"),
    ("env.id=Blackjack-v1", "Blackjack-v1"),
    ("env.id=CarRacing-v3", "CarRacing-v3"),
    ("env.id=BipedalWalker-v3", "BipedalWalker-v3"),
    ("env.id=phys2d/CartPole-v1", "phys2d/CartPole-v1"),
    ("env.id=tabular/Blackjack-v0", "Blackjack"),
    ("env.id=GymV26Environment-v0", "GymV26Environment-v0"),
    ("env.id=../../etc/passwd-v1", "passwd"),
    ("env.id=gymnasium.envs.classic_control:CartPoleEnv-v1", "CartPoleEnv"),
    ("env.kwargs={unknown_kwarg=1}", "unknown_kwarg"),
    ("env.kwargs={render_mode=1}", "render_mode"),
    ("env.kwargs={max_episode_steps=0}", "max_episode_steps"),
    ("env.kwargs={max_episode_steps=-5}", "max_episode_steps"),
    ("env.kwargs={max_episode_steps='ten'}", "max_episode_steps"),
    ("env.kwargs={actions=['UP','DOWN']}", "env.actions"),
    ("env.kwargs={obs_type='rgb'}", "obs_type"),
    ("env.kwargs={continuous=true}", "continuous"),
    ("env.actions=['UP','DOWN']", "env.actions"),
    ("env.actions='UP'", "env.actions"),
]
# gymnasium warns about a render mode the env does not list, and goes on
WARNED_ENVS = [("env.kwargs={render_mode='ascii'}", "render_mode")]
PONG_ACTIONS = [
    ("['UP']", "env.actions"),
    ("['FOO','UP']", "FOO"),
    ("['UP','UP']", "twice"),
    ("['UP','RIGHT']", "twice"),
    ("['NOOP','UP','DOWN']", "categorical"),
    ("[1, 2]", "env.actions"),
    ("['up','down']", "up"),
]
# valid env settings that a tiny run trains on
GOOD_ENVS = [
    "env.id=CartPole-v0",
    "env.id=Acrobot-v1 policy.head=categorical",  # 3 actions
    "env.kwargs={max_episode_steps=5}",
    "env.kwargs={sutton_barto_reward=true}",
]


def env_cases() -> list[Case]:
    cases = []
    for i, (text, name) in enumerate(ENVS):
        for command in ("train", "check"):
            out = ["--out", "run"] if command == "train" else []
            cases.append(
                Case(
                    "env",
                    f"{command}-{text}",
                    [command, "cartpole", *TINY, "--set", text, *out],
                    (2,),
                    names=(name,),
                    fresh="run" if command == "train" else None,
                    quick=i in (0, 7) and command == "train",
                )
            )
    for text, name in WARNED_ENVS:
        cases.append(
            Case(
                "env",
                f"train-{text}",
                ["train", "cartpole", *TINY, "--set", text, "--out", "run"],
                (0, 2),
                names=(name,),
                check=warned(name),
            )
        )
    for text, name in ENVS[7:14]:  # continuous and non-flat spaces, in eval's and sweep's hands
        cases.append(
            Case(
                "env",
                f"sweep-{text}",
                ["sweep", "cartpole", "--set", text, *TINY, "--workers", "1", "--out", "sw"],
                (2,),
                names=(name,),
                timeout=120,
            )
        )
    for actions, name in PONG_ACTIONS:
        cases.append(
            Case(
                "env",
                f"pong-actions={actions}",
                ["train", "pong", "--set", f"env.actions={actions}", "--out", "run"],
                (2,),
                names=(name,),
                fresh="run",
            )
        )
    cases.append(
        Case(
            "env",
            "pong-bernoulli-3-actions-by-grid",
            ["sweep", "pong", "--grid", "env.actions=['NOOP','UP','DOWN']", "--out", "sw"],
            (2,),
            names=("--grid",),
        )
    )
    for text in GOOD_ENVS:
        cases.append(
            Case(
                "env",
                f"valid-{text}",
                ["train", "cartpole", *TINY, *(a for t in text.split() for a in ("--set", t))]
                + ["--out", "run"],
                (0,),
                check=rows_ok("run"),
            )
        )
    return cases


# ---------------------------------------------------------------------------------------------
# Class: bad --set values, on every command that takes --set

SETS = [
    ("train.seed", "expected section.key=value"),
    ("seed=1", "seed"),
    ("=1", "="),
    (".seed=1", "seed"),
    ("train.seed=", "train.seed"),
    ("train.seed=1=2", "train.seed"),
    ("train.seed=[1]", "train.seed"),
    ("train.seed={a=1}", "train.seed"),
    ("train.seed=" + "9" * 5000, "train.seed"),
    ("train.seed=١", "train.seed"),
    ("train.gamma=nan", "train.gamma"),
    ("train.gamma=inf", "train.gamma"),
    ("train.gamma=1e400", "train.gamma"),
    ("policy.hidden_sizes=32", "policy.hidden_sizes"),
    ("policy.hidden_sizes=[32", "policy.hidden_sizes"),
    ("policy.hidden_sizes=" + deep("[", "]", 50000), "nested"),
    ("env.kwargs=" + "{a=" * 20000 + "1" + "}" * 20000, "nested"),
    ("env.kwargs=max_episode_steps=5", "env.kwargs"),
    ("policy.backend=numpy extra", "policy.backend"),
    ("log.progress=yes", "log.progress"),
    ("log.progress=1", "log.progress"),
    ("env=1", "env"),
    ("train=1", "train"),
    (" train . seed=3", "train"),
    ("policy.init_log_std=nan", "policy.init_log_std"),
    ("policy.init_log_std=100", "policy.init_log_std"),
    ("policy.init_log_std=-1", "policy.init_log_std"),  # the gaussian head's, not CartPole's
    ("policy.head=gaussian", "gaussian"),  # CartPole's actions are Discrete(2)
    ("env.normalize_obs=yes", "env.normalize_obs"),
    ("train.seed=-0", None),  # -0 is 0: valid
    ("train.episodes=0x10", None),  # TOML hex: valid
    ("train.seed = 3", None),  # spaces around: valid
    ("policy.hidden_sizes=[32,]", None),  # TOML trailing comma: valid
]


def set_cases() -> list[Case]:
    cases = []
    for i, (text, name) in enumerate(SETS):
        for command in ("train", "check", "compare", "sweep", "diagnose"):
            if name is None and command != "train":
                continue
            if command == "diagnose" and name is not None and "nested" not in name:
                if not text.startswith(("optimizer.", "policy.reduction", "train.gamma")):
                    continue
            argv = {
                "train": ["train", "cartpole", *TINY, "--set", text, "--out", "run"],
                "check": ["check", "cartpole", "--set", text],
                "compare": ["compare", "cartpole", "--set", text, "--out", "cmp"],
                "sweep": ["sweep", "cartpole", "--set", text, "--out", "sw"],
                "diagnose": diagnose_argv() + ["--set", text],
            }[command]
            cases.append(
                Case(
                    "set-values",
                    f"{command}-{text[:60]}",
                    argv,
                    (0,) if name is None else (2,),
                    copy("diag_W.npz", "diag_B.npz", "diag_G.npz")
                    if command == "diagnose"
                    else None,
                    names=() if name is None else (name,),
                    check=rows_ok("run") if name is None else None,
                    quick=i == 0 and command in ("train", "sweep"),
                )
            )
    for text in ("train.episodes=40", "policy.hidden_sizes=[8]"):
        cases.append(
            Case(
                "set-values",
                f"diagnose-unused-{text}",
                diagnose_argv() + ["--set", text],
                (2,),
                copy("diag_W.npz", "diag_B.npz", "diag_G.npz"),
                names=(text.split("=")[0],),
            )
        )
    return cases


def diagnose_argv(w="diag_W.npz", b="diag_B.npz", g="diag_G.npz", a=None) -> list[str]:
    argv = ["diagnose", "--weights", w, "--batch", b, "--grads", g]
    return argv + (["--after", a] if a else [])


# ---------------------------------------------------------------------------------------------
# Class: bad --grid values (pgrl sweep): refused before any trial, naming --grid

GRIDS = [
    ("train.episodes", ("--grid",)),
    ("episodes=10,20", ("--grid",)),
    ("=1,2", ("--grid",)),
    (".x=1,2", ("--grid",)),
    ("train.=1,2", ("--grid",)),
    ("train.seed=1,2", ("--grid", "--seeds")),
    ("policy.backend=numpy,tensorflow", ("--grid", "--backend")),
    ("train.episodes=10,10", ("--grid", "twice")),
    ("train.episodes=10,,20", ("--grid", "empty")),
    ("train.episodes=", ("--grid", "empty")),
    ("train.episodes=x,y", ("--grid", "train.episodes")),
    ("train.episodes=0,10", ("--grid", "train.episodes")),
    ("train.episodes=1e400", ("--grid", "train.episodes")),
    ("foo.bar=1,2", ("--grid", "foo")),
    ("train.foo=1,2", ("--grid", "train.foo")),
    ("policy.hidden_sizes=[16],[32", ("--grid", "policy.hidden_sizes")),
    ("policy.hidden_sizes=" + deep("[", "]", 50000), ("--grid", "nested")),
    ("env.kwargs=" + "{a=" * 20000 + "1" + "}" * 20000, ("--grid", "nested")),
    ("policy.head=categorical,gaussian", ("gaussian", "CartPole-v1")),
    ("policy.head=categorical,poisson", ("--grid", "poisson")),
    ("env.id='Cart", ("--grid", "env.id")),
    ("env.id=Foo-v1,CartPole-v1", ("Foo-v1",)),
    ("env.id=Pendulum-v1", ("Pendulum-v1",)),
    ("env.id=Blackjack-v1", ("Blackjack-v1",)),
    ("env.kwargs={a=1}", ("env.kwargs",)),
    ("env.num_envs=0,2", ("--grid", "env.num_envs")),
    ("train.episodes=10,20=30", ("--grid", "train.episodes")),
    ("train.episodes=" + "9" * 5000, ("--grid", "train.episodes")),
]


def grid_cases() -> list[Case]:
    cases = []
    base = ["sweep", "cartpole", "--set", "train.episodes=10", "--set", "log.progress=false"]
    for i, (text, names) in enumerate(GRIDS):
        cases.append(
            Case(
                "grid-values",
                text[:60],
                [*base, "--grid", text, "--workers", "1", "--out", "sw"],
                (2,),
                names=names,
                timeout=120,
                quick=i in (1, 2),
            )
        )
    cases.append(
        Case(
            "grid-values",
            "same-key-twice",
            [*base, "--grid", "train.gamma=0.9", "--grid", "train.gamma=0.8", "--out", "sw"],
            (2,),
            names=("--grid", "twice"),
        )
    )
    return cases


# ---------------------------------------------------------------------------------------------
# Class: bad flags and combinations

FLAGS: list[tuple[str, list[str], tuple[int, ...], tuple[str, ...]]] = [
    ("no-command", [], (2,), ("command",)),
    ("unknown-command", ["trian", "cartpole"], (2,), ("trian",)),
    ("unknown-flag", ["train", "cartpole", "--epochs", "3"], (2,), ("--epochs",)),
    ("train-no-config", ["train"], (2,), ("config",)),
    ("train-seed-word", ["train", "cartpole", "--seed", "x"], (2,), ("--seed",)),
    ("train-seed-negative", ["train", "cartpole", "--seed", "-1"], (2,), ("seed",)),
    ("train-seed-float", ["train", "cartpole", "--seed", "1.5"], (2,), ("--seed",)),
    ("train-seed-huge", ["train", "cartpole", "--seed", "9" * 5000], (2,), ("--seed",)),
    ("train-backend-torch", ["train", "cartpole", "--backend", "torch"], (2,), ("--backend",)),
    ("train-set-missing-value", ["train", "cartpole", "--set"], (2,), ("--set",)),
    (
        "train-init-and-resume",
        ["train", "cartpole", "--init", "x.npz", "--resume"],
        (2,),
        ("--init",),
    ),
    (
        "train-resume-and-force",
        ["train", "cartpole", "--resume", "--force", "--out", "o"],
        (2,),
        ("--force",),
    ),
    (
        "train-allow-changes-alone",
        ["train", "cartpole", "--allow-changes", "--out", "o"],
        (2,),
        ("--allow-changes",),
    ),
    ("train-out-empty", ["train", "cartpole", "--out", ""], (2,), ("--out",)),
    ("train-out-blank", ["train", "cartpole", "--out", "   "], (2,), ("--out",)),
    (
        "train-address-local",
        ["train", "cartpole", *TINY, "--address", "10.0.0.1:6379", "--out", "o"],
        (2,),
        ("--address",),
    ),
    ("eval-episodes-zero", ["eval", "pong", "--episodes", "0"], (2,), ("--episodes",)),
    ("eval-episodes-negative", ["eval", "pong", "--episodes", "-3"], (2,), ("--episodes",)),
    ("eval-episodes-word", ["eval", "pong", "--episodes", "ten"], (2,), ("--episodes",)),
    ("eval-seed-negative", ["eval", "pong", "--seed", "-1"], (2,), ("--seed",)),
    ("eval-no-checkpoint", ["eval"], (2,), ("checkpoint",)),
    ("eval-gif-png", ["eval", "pong", "--gif", "x.png"], (2,), ("--gif",)),
    ("eval-gif-dir", ["eval", "pong", "--gif", "d.gif"], (2,), ("--gif",)),
    ("eval-gif-under-file", ["eval", "pong", "--gif", "f/x.gif"], (2,), ("--gif",)),
    ("export-dtype", ["export", "c.npz", "o.npz", "--dtype", "float16"], (2,), ("--dtype",)),
    ("export-missing-out", ["export", "c.npz"], (2,), ("out",)),
    ("compare-workers-zero", ["compare", "cartpole", "--workers", "0"], (2,), ("--workers",)),
    (
        "compare-workers-ray",
        ["compare", "cartpole", "--workers", "2", "--executor", "ray"],
        (2,),
        ("--workers",),
    ),
    (
        "compare-address-local",
        ["compare", "cartpole", "--address", "10.0.0.1:1"],
        (2,),
        ("--address",),
    ),
    ("compare-seeds-twice", ["compare", "cartpole", "--seeds", "1", "1"], (2,), ("--seeds",)),
    ("compare-seeds-negative", ["compare", "cartpole", "--seeds", "-2"], (2,), ("--seeds",)),
    (
        "compare-backends-twice",
        ["compare", "cartpole", "--backends", "numpy", "numpy"],
        (2,),
        ("--backends",),
    ),
    ("compare-backends-bad", ["compare", "cartpole", "--backends", "jax"], (2,), ("--backends",)),
    ("compare-executor-bad", ["compare", "cartpole", "--executor", "slurm"], (2,), ("--executor",)),
    ("compare-out-empty", ["compare", "cartpole", "--out", ""], (2,), ("--out",)),
    ("compare-out-file", ["compare", "cartpole", "--out", "f"], (2,), ("--out",)),
    (
        "sweep-resume-force",
        ["sweep", "cartpole", "--resume", "--force", "--out", "sw"],
        (2,),
        ("--force",),
    ),
    ("sweep-scheduler-bad", ["sweep", "cartpole", "--scheduler", "pbt"], (2,), ("--scheduler",)),
    ("sweep-seeds-none", ["sweep", "cartpole", "--seeds"], (2,), ("--seeds",)),
    (
        "sweep-seeds-twice",
        ["sweep", "cartpole", "--seeds", "3", "3", "--out", "sw"],
        (2,),
        ("--seeds",),
    ),
    (
        "sweep-backend-twice",
        ["sweep", "cartpole", "--backend", "numpy", "numpy", "--out", "sw"],
        (2,),
        ("--backend",),
    ),
    ("sweep-out-empty", ["sweep", "cartpole", "--out", ""], (2,), ("--out",)),
    ("sweep-out-file", ["sweep", "cartpole", "--out", "f"], (2,), ("--out",)),
    ("sweep-grid-no-value", ["sweep", "cartpole", "--grid"], (2,), ("--grid",)),
    ("check-seed-negative", ["check", "cartpole", "--seed", "-4"], (2,), ("--seed",)),
    ("check-seed-word", ["check", "cartpole", "--seed", "a"], (2,), ("--seed",)),
    (
        "diagnose-missing-grads",
        ["diagnose", "--weights", "w.npz", "--batch", "b.npz"],
        (2,),
        ("--grads",),
    ),
    ("diagnose-optimizer-adam", diagnose_argv() + ["--optimizer", "adam"], (2,), ("--optimizer",)),
    ("version-extra", ["--version", "extra"], (0, 2), ()),
    ("help-unknown", ["train", "--hlep"], (2,), ("config",)),  # argparse: the missing first
]


def flag_cases() -> list[Case]:
    def files(work: Path, fixtures: Path) -> None:
        (work / "d.gif").mkdir()
        (work / "f").write_text("a file\n")

    cases = []
    for i, (name, argv, expect, names) in enumerate(FLAGS):
        cases.append(
            Case("flags", name, argv, expect, files, names=names, quick=i in (0, 4), timeout=60)
        )
    return cases


# ---------------------------------------------------------------------------------------------
# Class: bad .npz files for eval, export, train --init, train --resume and diagnose


def zip_patch(data: bytes, local_offset: int, central_offset: int, value: int, size: int = 2):
    """``data`` (a zip) with a field of every member's local and central header set."""
    b = bytearray(data)
    archive = zipfile.ZipFile(io.BytesIO(data))
    eocd = data.rfind(b"PK\x05\x06")
    pos = struct.unpack("<I", data[eocd + 16 : eocd + 20])[0]
    fmt = "<H" if size == 2 else "<I"
    for info in archive.infolist():
        struct.pack_into(fmt, b, info.header_offset + local_offset, value)
        struct.pack_into(fmt, b, pos + central_offset, value)
        n, m, k = struct.unpack("<HHH", data[pos + 28 : pos + 34])
        pos += 46 + n + m + k
    return bytes(b)


def npz_bytes(arrays: dict, compressed: bool = False) -> bytes:
    f = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(f, **arrays)
    return f.getvalue()


def raw_npy(header: dict | str, payload: bytes = b"", version: tuple = (1, 0)) -> bytes:
    """An .npy member with a hand-written header (which may lie)."""
    text = header if isinstance(header, str) else repr(header)
    text = text + " " * ((64 - (len(text) + 11) % 64) % 64) + "\n"
    if version == (1, 0):
        head = struct.pack("<H", len(text))
    else:
        head = struct.pack("<I", len(text))
    return b"\x93NUMPY" + bytes(version) + head + text.encode("latin1") + payload


def zip_of(members: dict[str, bytes], method=zipfile.ZIP_STORED) -> bytes:
    f = io.BytesIO()
    with zipfile.ZipFile(f, "w", method) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return f.getvalue()


def load_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def edited(source: str, edit: Callable[[dict], None]) -> Callable[[Path], bytes]:
    """A fixture .npz (``run/checkpoint.npz``, ``weights.npz``) with its arrays edited."""

    def make(fixtures: Path) -> bytes:
        arrays = load_npz(fixtures / source)
        edit(arrays)
        return npz_bytes(arrays)

    return make


def with_(key: str, value) -> Callable[[dict], None]:
    def edit(arrays: dict) -> None:
        arrays[key] = np.asarray(value) if not isinstance(value, np.ndarray) else value

    return edit


def without(*keys: str) -> Callable[[dict], None]:
    def edit(arrays: dict) -> None:
        for k in keys:
            arrays.pop(k, None)

    return edit


def scaled(key: str, factor) -> Callable[[dict], None]:
    def edit(arrays: dict) -> None:
        arrays[key] = arrays[key] * factor

    return edit


def retyped(key: str, dtype) -> Callable[[dict], None]:
    def edit(arrays: dict) -> None:
        arrays[key] = arrays[key].astype(dtype)

    return edit


def from_fixture(source: str, change: Callable[[bytes], bytes]) -> Callable[[Path], bytes]:
    return lambda fixtures: change((fixtures / source).read_bytes())


def lying_size(data: bytes) -> bytes:
    """A stored .npz whose first member's header and zip entry both claim ~3.9 GB."""
    header = {"descr": "<f8", "fortran_order": False, "shape": (480_000_000,)}
    members = {"format_version.npy": raw_npy(header, b"\0" * 64)}
    fake = zip_of(members)
    return zip_patch(fake, 22, 24, 0xF0000000, 4)


# name -> content (bytes, or bytes from the fixtures); every consumer must refuse it
BAD_FILES: dict[str, bytes | Callable[[Path], bytes]] = {
    "empty": b"",
    "text": b"not an npz archive\n",
    "garbage": np.random.default_rng(2).bytes(2048),
    "npy": lambda fx: (lambda f: (np.save(f, np.zeros(3)), f.getvalue())[1])(io.BytesIO()),
    "pickle": pickle.dumps({"W1": [[1.0]]}),
    "gzip-npz": from_fixture("run/checkpoint.npz", gzip.compress),
    "truncated-half": from_fixture("run/checkpoint.npz", lambda d: d[: len(d) // 2]),
    "truncated-end": from_fixture("run/checkpoint.npz", lambda d: d[:-10]),
    "zip-magic-only": b"PK\x03\x04" + bytes(26),
    "zip-empty": zip_of({}),
    "zip-text-member": zip_of({"readme.txt": b"hello"}),
    "zip-directory-member": zip_of({"w_W1/": b""}),
    "object-array": npz_bytes({"w_W1": np.array([{"a": 1}], dtype=object)}),
    "huge-shape-claim": zip_of(
        {"w_W1.npy": raw_npy({"descr": "<f8", "fortran_order": False, "shape": (10**12,)})}
    ),
    "negative-shape": zip_of(
        {"w_W1.npy": raw_npy({"descr": "<f8", "fortran_order": False, "shape": (-1, 4)})}
    ),
    "header-not-a-dict": zip_of({"w_W1.npy": raw_npy("[1, 2, 3]")}),
    "header-bad-dtype": zip_of(
        {"w_W1.npy": raw_npy({"descr": "<q99", "fortran_order": False, "shape": (1,)})}
    ),
    "header-huge-string-dtype": zip_of(
        {"w_W1.npy": raw_npy({"descr": "<U999999999", "fortran_order": False, "shape": (8,)})}
    ),
    "npy-version-9": zip_of(
        {
            "w_W1.npy": raw_npy(
                {"descr": "<f8", "fortran_order": False, "shape": (1,)}, b"\0" * 8, (9, 0)
            )
        }
    ),
    "npy-bad-magic": zip_of({"w_W1.npy": b"\x93NUMPX\x01\x00" + bytes(80)}),
    "encrypted-flag": from_fixture("run/checkpoint.npz", lambda d: zip_patch(d, 6, 8, 1)),
    "unknown-compression": from_fixture("run/checkpoint.npz", lambda d: zip_patch(d, 8, 10, 99)),
    "bad-crc": from_fixture("run/checkpoint.npz", lambda d: zip_patch(d, 14, 16, 0xDEADBEEF, 4)),
    "lying-sizes": lying_size,
}
# name -> a fixture file and its edit: a well-formed archive with wrong content
BAD_CHECKPOINTS: dict[str, Callable[[Path], bytes]] = {
    "no-format-version": edited("run/checkpoint.npz", without("format_version")),
    "format-version-2": edited("run/checkpoint.npz", with_("format_version", np.int64(2))),
    "format-version-text": edited("run/checkpoint.npz", with_("format_version", "one")),
    "no-weights": edited("run/checkpoint.npz", without("w_W1", "w_W2", "w_b1", "w_b2")),
    "no-W2": edited("run/checkpoint.npz", without("w_W2")),
    "extra-W3": edited("run/checkpoint.npz", with_("w_W3", np.zeros((1, 1)))),
    "W1-transposed": edited("run/checkpoint.npz", lambda a: a.update(w_W1=a["w_W1"].T.copy())),
    "W1-3d": edited("run/checkpoint.npz", lambda a: a.update(w_W1=a["w_W1"][None])),
    "W1-scalar": edited("run/checkpoint.npz", with_("w_W1", np.float64(1.0))),
    "W1-int": edited("run/checkpoint.npz", retyped("w_W1", np.int64)),
    "W1-complex": edited("run/checkpoint.npz", retyped("w_W1", np.complex128)),
    "W1-bool": edited("run/checkpoint.npz", retyped("w_W1", bool)),
    "W1-nan": edited("run/checkpoint.npz", scaled("w_W1", np.nan)),
    "W1-inf": edited("run/checkpoint.npz", scaled("w_W1", np.inf)),
    "W1-empty": edited("run/checkpoint.npz", with_("w_W1", np.zeros((0, 32)))),
    "opt-wrong-shape": edited("run/checkpoint.npz", with_("opt_v_W1", np.zeros((2, 2)))),
    "head-gaussian": edited("run/checkpoint.npz", with_("head", "gaussian")),
    "head-categorical": edited("run/checkpoint.npz", with_("head", "categorical")),
    "n-actions-0": edited("run/checkpoint.npz", with_("n_actions", np.int64(0))),
    "n-actions-huge": edited("run/checkpoint.npz", with_("n_actions", np.int64(2**62))),
    "n-actions-text": edited("run/checkpoint.npz", with_("n_actions", "two")),
    "backend-torch": edited("run/checkpoint.npz", with_("backend", "torch")),
    "config-not-toml": edited("run/checkpoint.npz", with_("config", "[env\nid = 1")),
    "config-bad-value": edited("run/checkpoint.npz", with_("config", "[train]\ngamma = 7\n")),
    "config-unknown-key": edited("run/checkpoint.npz", with_("config", "[train]\nfoo = 1\n")),
    "config-other-env": edited(
        "run/checkpoint.npz",
        with_("config", '[env]\nid = "Acrobot-v1"\n[policy]\nhidden_sizes = [32]\nbias = true\n'),
    ),
    "config-deep": edited(
        "run/checkpoint.npz",
        with_("config", "[env]\nkwargs = {a = " + deep("[", "]", 50000) + "}\n"),
    ),
    "rng-not-json": edited("run/checkpoint.npz", with_("rng_state", "{not json")),
    "rng-a-list": edited("run/checkpoint.npz", with_("rng_state", "[1, 2, 3]")),
    "rng-slots-garbage": edited("run/checkpoint.npz", with_("rng_state", '{"slots": [1, 2]}')),
    "rng-slot-state-garbage": edited(
        "run/checkpoint.npz",
        with_("rng_state", json.dumps({"slots": [{"bit_generator": "PCG64", "state": 5}] * 20})),
    ),
    "episodes-negative": edited("run/checkpoint.npz", with_("episodes", np.int64(-5))),
    "episodes-text": edited("run/checkpoint.npz", with_("episodes", "forty")),
    "episodes-huge": edited("run/checkpoint.npz", with_("episodes", np.float64(1e300))),
    "episodes-nan": edited("run/checkpoint.npz", with_("episodes", np.float64(np.nan))),
    "wall-time-nan": edited("run/checkpoint.npz", with_("wall_time", np.float64(np.nan))),
    "recent-returns-text": edited("run/checkpoint.npz", with_("recent_returns", np.array(["a"]))),
    "a-weights-file": lambda fx: (fx / "weights.npz").read_bytes(),
}
BAD_WEIGHTS: dict[str, Callable[[Path], bytes]] = {
    "kind-other": edited("weights.npz", with_("kind", "something-else")),
    "info-not-json": edited("weights.npz", with_("info", "{oops")),
    "no-weights": edited("weights.npz", without("w_W1", "w_W2", "w_b1", "w_b2")),
    "W1-nan": edited("weights.npz", scaled("w_W1", np.nan)),
    "W1-wrong-shape": edited("weights.npz", with_("w_W1", np.zeros((7, 32)))),
    "W1-text": edited("weights.npz", with_("w_W1", np.array(["x"]))),
    "config-not-toml": edited("weights.npz", with_("config", "[[[")),
    "head-unknown": edited("weights.npz", with_("head", "beta")),
    "no-config": edited("weights.npz", without("config")),
}

# consumer -> (argv with FILE for the file, what the run directory must keep)
CONSUMERS = {
    "eval": ["eval", "FILE", "--episodes", "1"],
    "export": ["export", "FILE", "out.npz"],
    "init": ["train", "cartpole", *TINY, "--init", "FILE", "--out", "newrun"],
    "resume": ["train", "cartpole", *TINY, "--resume", "--out", "run"],
    "diagnose-weights": diagnose_argv(w="FILE"),
    "diagnose-batch": diagnose_argv(b="FILE"),
    "diagnose-after": diagnose_argv(a="FILE"),
}


# (consumer, variant prefix) -> exit statuses: parts of a file that this consumer does not read
UNREAD = {
    ("init", "config-"): (0, 2),  # --init takes the weights (and RMSprop state) only
    ("init", "rng-"): (0, 2),
    ("init", "weights-config-"): (0, 2),
    ("eval", "rng-"): (0, 2),  # playing and exporting need no RNG state
    ("export", "rng-"): (0, 2),
    ("export", "config-other-env"): (0, 2),  # export makes no env: eval refuses the result
}


def npz_expect(consumer: str, name: str) -> tuple[int, ...]:
    return next((e for (c, p), e in UNREAD.items() if c == consumer and name.startswith(p)), (2,))


def npz_cases() -> list[Case]:
    cases = []

    def case(consumer: str, name: str, content, quick: bool = False) -> Case:
        argv = [a.replace("FILE", "bad.npz") for a in CONSUMERS[consumer]]
        if consumer == "resume":
            setup = steps(copy("run"), write("run/checkpoint.npz", content))
            guard, names = "run", ("run",)
        else:
            setup = steps(
                write("bad.npz", content),
                copy("diag_W.npz", "diag_B.npz", "diag_G.npz") if "diagnose" in consumer else None,
            )
            guard, names = None, ("bad.npz",)
        return Case(
            "npz",
            f"{consumer}-{name}",
            argv,
            npz_expect(consumer, name),
            setup,
            names=names,
            guard=guard,
            fresh="newrun" if consumer == "init" else None,
            needs=("run", "weights"),
            quick=quick,
            timeout=60,
        )

    for i, (name, content) in enumerate(BAD_FILES.items()):
        for consumer in CONSUMERS:
            cases.append(case(consumer, name, content, quick=i == 0 and consumer == "eval"))
    for i, (name, content) in enumerate(BAD_CHECKPOINTS.items()):
        for consumer in ("eval", "export", "init", "resume"):
            if name == "a-weights-file" and consumer in ("eval", "init"):
                continue  # a weights file is played and started from: not bad there
            cases.append(case(consumer, name, content, quick=i == 12 and consumer == "eval"))
    for name, content in BAD_WEIGHTS.items():
        for consumer in ("eval", "init", "export"):
            cases.append(case(consumer, f"weights-{name}", content))
    for name in ("directory", "fifo", "missing"):

        def special(work: Path, fixtures: Path, name=name) -> None:
            if name == "directory":
                (work / "bad.npz").mkdir()
            elif name == "fifo":
                os.mkfifo(work / "bad.npz")

        for consumer in ("eval", "export", "init", "diagnose-weights"):
            cases.append(
                Case(
                    "npz",
                    f"{consumer}-{name}",
                    [a.replace("FILE", "bad.npz") for a in CONSUMERS[consumer]],
                    (2,),
                    steps(special, copy("diag_B.npz", "diag_G.npz")),
                    names=("bad.npz",),
                    timeout=30,
                )
            )
    # a huge, valid archive: refused as not fitting, in bounded time and memory
    cases.append(
        Case(
            "npz",
            "eval-huge-weights",
            ["eval", "bad.npz", "--episodes", "1"],
            (2,),
            write("bad.npz", edited("weights.npz", with_("w_W1", np.zeros((2_000_000, 4))))),
            names=("bad.npz",),
            needs=("weights",),
        )
    )
    return cases


# diagnose: well-formed archives whose arrays do not fit together
def diag(name: str, **arrays) -> Callable[[Path], bytes]:
    return lambda fixtures: npz_bytes(arrays)


_PPO_BATCH = {"obs": np.zeros((6, 4)), "actions": np.zeros(6), "advantages": np.ones(6)}
DIAGNOSE: list[tuple[str, str, Callable[[Path], bytes], str]] = [
    ("weights-no-W", "w", diag("w", b1=np.zeros(3)), "W1"),
    ("weights-W2-only", "w", diag("w", W2=np.zeros((8, 1))), "W1"),
    ("weights-W1-1d", "w", diag("w", W1=np.zeros(4), W2=np.zeros((4, 1))), "W1"),
    ("weights-chain-broken", "w", diag("w", W1=np.zeros((4, 8)), W2=np.zeros((7, 1))), "W2"),
    ("weights-W0", "w", diag("w", W0=np.zeros((4, 8)), W1=np.zeros((8, 1))), "W0"),
    ("weights-nan", "w", diag("w", W1=np.full((4, 8), np.nan), W2=np.zeros((8, 1))), "NaN"),
    ("weights-text", "w", diag("w", W1=np.array([["a"]]), W2=np.zeros((1, 1))), "W1"),
    ("weights-no-columns", "w", diag("w", W1=np.zeros((4, 8)), W2=np.zeros((8, 0))), "W2"),
    (
        "weights-stray-bias",
        "w",
        diag("w", W1=np.zeros((4, 8)), W2=np.zeros((8, 1)), b3=np.zeros(1)),
        "b3",
    ),
    (
        "weights-bias-shape",
        "w",
        diag("w", W1=np.zeros((4, 8)), W2=np.zeros((8, 1)), b1=np.zeros(3)),
        "b1",
    ),
    ("weights-W99999999999", "w", diag("w", W99999999999=np.zeros((1, 1))), "W1"),
    (
        "batch-missing-actions",
        "b",
        diag("b", obs=np.zeros((6, 4)), advantages=np.zeros(6)),
        "actions",
    ),
    (
        "batch-obs-columns",
        "b",
        diag("b", obs=np.zeros((6, 5)), actions=np.zeros(6), advantages=np.zeros(6)),
        "obs",
    ),
    (
        "batch-obs-1d",
        "b",
        diag("b", obs=np.zeros(6), actions=np.zeros(6), advantages=np.zeros(6)),
        "obs",
    ),
    (
        "batch-obs-empty",
        "b",
        diag("b", obs=np.zeros((0, 4)), actions=np.zeros(0), advantages=np.zeros(0)),
        "obs",
    ),
    (
        "batch-actions-2",
        "b",
        diag("b", obs=np.zeros((6, 4)), actions=np.full(6, 2), advantages=np.zeros(6)),
        "actions",
    ),
    (
        "batch-actions-negative",
        "b",
        diag("b", obs=np.zeros((6, 4)), actions=np.full(6, -1), advantages=np.zeros(6)),
        "actions",
    ),
    (
        "batch-actions-half",
        "b",
        diag("b", obs=np.zeros((6, 4)), actions=np.full(6, 0.5), advantages=np.zeros(6)),
        "actions",
    ),
    (
        "batch-actions-nan",
        "b",
        diag("b", obs=np.zeros((6, 4)), actions=np.full(6, np.nan), advantages=np.zeros(6)),
        "actions",
    ),
    (
        "batch-actions-text",
        "b",
        diag("b", obs=np.zeros((6, 4)), actions=np.array(["a"] * 6), advantages=np.zeros(6)),
        "actions",
    ),
    (
        "batch-advantages-short",
        "b",
        diag("b", obs=np.zeros((6, 4)), actions=np.zeros(6), advantages=np.zeros(5)),
        "advantages",
    ),
    (
        "batch-advantages-inf",
        "b",
        diag("b", obs=np.ones((6, 4)), actions=np.zeros(6), advantages=np.full(6, np.inf)),
        "advantages",
    ),
    (
        "batch-obs-nan",
        "b",
        diag("b", obs=np.full((6, 4), np.nan), actions=np.zeros(6), advantages=np.zeros(6)),
        "obs",
    ),
    (
        "batch-both-kinds",
        "b",
        diag(
            "b",
            obs=np.zeros((6, 4)),
            actions=np.zeros(6),
            advantages=np.zeros(6),
            rewards=np.zeros(6),
        ),
        "rewards",
    ),
    (
        "batch-ends-not-flags",
        "b",
        diag(
            "b",
            obs=np.zeros((6, 4)),
            actions=np.zeros(6),
            rewards=np.zeros(6),
            episode_ends=np.full(6, 2),
        ),
        "episode_ends",
    ),
    (
        "batch-ends-open",
        "b",
        diag(
            "b",
            obs=np.zeros((6, 4)),
            actions=np.zeros(6),
            rewards=np.zeros(6),
            episode_ends=np.zeros(6),
        ),
        "episode_ends",
    ),
    (
        "batch-extra-array",
        "b",
        diag(
            "b",
            obs=np.zeros((6, 4)),
            actions=np.zeros(6),
            advantages=np.zeros(6),
            values=np.zeros(6),
        ),
        "values",
    ),
    # PPO's batch: old log-probs of the policy that played it, and the clip range
    *(
        (f"batch-ppo-{name}", "b", diag("b", **_PPO_BATCH, **extra), word)
        for name, extra, word in (
            ("old-shape", {"old_log_probs": -np.ones(5)}, "old_log_probs"),
            ("old-positive", {"old_log_probs": np.full(6, 0.5)}, "old_log_probs"),
            ("old-nan", {"old_log_probs": np.full(6, np.nan)}, "old_log_probs"),
            ("old-2d", {"old_log_probs": -np.ones((6, 1))}, "old_log_probs"),
            ("clip-alone", {"clip": np.array(0.2)}, "clip"),
            ("clip-zero", {"old_log_probs": -np.ones(6), "clip": np.array(0.0)}, "clip"),
            ("clip-above-1", {"old_log_probs": -np.ones(6), "clip": np.array(1.5)}, "clip"),
            ("clip-vector", {"old_log_probs": -np.ones(6), "clip": np.full(6, 0.2)}, "clip"),
        )
    ),
    (
        "batch-ppo-with-rewards",
        "b",
        diag(
            "b",
            obs=np.zeros((6, 4)),
            actions=np.zeros(6),
            rewards=np.zeros(6),
            episode_ends=np.array([5]),
            old_log_probs=-np.ones(6),
        ),
        "old_log_probs",
    ),
    ("grads-missing-W2", "g", diag("g", W1=np.zeros((4, 8))), "W2"),
    ("grads-extra", "g", diag("g", W1=np.zeros((4, 8)), W2=np.zeros((8, 1)), W3=np.zeros(1)), "W3"),
    ("grads-transposed", "g", diag("g", W1=np.zeros((8, 4)), W2=np.zeros((8, 1))), "transposed"),
    ("grads-nan", "g", diag("g", W1=np.full((4, 8), np.nan), W2=np.zeros((8, 1))), "NaN"),
    ("after-wrong-shape", "a", diag("a", W1=np.zeros((4, 8)), W2=np.zeros((1, 8))), "W2"),
    ("after-inf", "a", diag("a", W1=np.full((4, 8), np.inf), W2=np.zeros((8, 1))), "inf"),
    (
        "weights-name-5000-digits",
        "w",
        diag("w", W1=np.zeros((4, 8)), **{"W" + "1" * 5000: np.zeros((8, 1))}),
        "unexpected",
    ),
    (
        "grads-3000-extra",
        "g",
        diag(
            "g",
            W1=np.zeros((4, 8)),
            W2=np.zeros((8, 1)),
            **{f"x{i}": np.zeros(1) for i in range(3000)},
        ),
        "unexpected",
    ),
]


def diagnose_cases() -> list[Case]:
    cases = []
    for i, (name, role, content, names) in enumerate(DIAGNOSE):
        files = {"w": "diag_W.npz", "b": "diag_B.npz", "g": "diag_G.npz", "a": None}
        files[role] = "bad.npz"
        argv = diagnose_argv(files["w"], files["b"], files["g"], files["a"])
        cases.append(
            Case(
                "diagnose",
                name,
                argv,
                (2,),
                steps(copy("diag_W.npz", "diag_B.npz", "diag_G.npz"), write("bad.npz", content)),
                names=(names,),
                quick=i == 0,
            )
        )
    for name, settings in (
        ("set-head-poisson", ["--set", "policy.head=poisson"]),
        ("set-head-gaussian", ["--set", "policy.head=gaussian"]),  # weights without log_std
        ("set-lr-zero", ["--set", "optimizer.learning_rate=0"]),
        ("set-decay-one", ["--set", "optimizer.decay=1"]),
        ("set-reduction-max", ["--set", "policy.reduction=max"]),
        ("set-standardize-x", ["--set", "train.standardize=x"]),
        ("set-seed", ["--set", "train.seed=3"]),
    ):
        cases.append(
            Case(
                "diagnose",
                name,
                diagnose_argv() + settings,
                (2,),
                copy("diag_W.npz", "diag_B.npz", "diag_G.npz"),
                names=("log_std" if name == "set-head-gaussian" else settings[1].split("=")[0],),
            )
        )
    cases.append(
        Case(
            "diagnose",
            "well-formed",
            diagnose_argv(a="diag_A.npz"),
            (0, 1, 3),
            copy("diag_W.npz", "diag_B.npz", "diag_G.npz", "diag_A.npz"),
        )
    )
    return cases


# ---------------------------------------------------------------------------------------------
# Class: run-directory misuse


def lock_held(run_dir: str, command_setup=None) -> Callable:
    """A runner: hold ``run_dir/.lock`` as a live pgrl process would, then run the command."""

    def runner(case: Case, work: Path, fixtures: Path):
        lock = work / run_dir / ".lock"
        lock.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.write(fd, b"4242\n")
            before = digest(work / run_dir)
            res = run(case.command(), work, case.timeout)
            outcome, detail = classify(case, res)
            if outcome == "ok":
                diff = changed(before, digest(work / run_dir))
                if diff:
                    outcome, detail = "corruption", f"{run_dir}: {diff}"
        finally:
            os.close(fd)
        return outcome, detail, res

    return runner


def edit_file(path: str, change: Callable[[bytes], bytes]) -> Callable:
    def setup(work: Path, fixtures: Path) -> None:
        p = work / path
        p.write_bytes(change(p.read_bytes()))

    return setup


def drop_line(index: int) -> Callable[[bytes], bytes]:
    def change(data: bytes) -> bytes:
        lines = data.splitlines(keepends=True)
        del lines[index]
        return b"".join(lines)

    return change


def swap_lines(i: int, j: int) -> Callable[[bytes], bytes]:
    def change(data: bytes) -> bytes:
        lines = data.splitlines(keepends=True)
        lines[i], lines[j] = lines[j], lines[i]
        return b"".join(lines)

    return change


def remove(path: str) -> Callable:
    def setup(work: Path, fixtures: Path) -> None:
        p = work / path
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()

    return setup


def replace_with_dir(path: str) -> Callable:
    return steps(remove(path), act(lambda w: (w / path).mkdir()))


def same_run(argv_extra: list[str] | None = None) -> list[str]:
    return ["train", "cartpole", *TINY, *(argv_extra or []), "--out", "run"]


RUN = ("run",)


def rundir_cases() -> list[Case]:
    c = []

    def add(name, argv, expect=(2,), setup=None, names=(), guard=None, check=None, **kw):
        c.append(
            Case("rundir", name, argv, expect, setup, names=names, guard=guard, check=check, **kw)
        )

    sweep_argv = ["sweep", "cartpole", "--set", "train.episodes=20", "--set", "log.progress=false"]
    sweep_argv += ["--grid", "train.batch_episodes=10,20", "--workers", "1"]
    add(
        "train-into-sweep",
        ["train", "cartpole", *TINY, "--out", "sweep"],
        setup=copy("sweep"),
        names=("sweep",),
        guard="sweep",
        needs=("sweep",),
        quick=True,
    )
    add(
        "train-force-into-sweep",
        ["train", "cartpole", *TINY, "--force", "--out", "sweep"],
        setup=copy("sweep"),
        names=("sweep",),
        guard="sweep",
        needs=("sweep",),
    )
    add(
        "train-resume-sweep",
        ["train", "cartpole", *TINY, "--resume", "--out", "sweep"],
        setup=copy("sweep"),
        names=("sweep",),
        guard="sweep",
        needs=("sweep",),
    )
    add(
        "sweep-into-run",
        [*sweep_argv, "--out", "run"],
        setup=copy("run"),
        names=("run",),
        guard="run",
        needs=RUN,
    )
    add(
        "sweep-force-into-run",
        [*sweep_argv, "--force", "--out", "run"],
        setup=copy("run"),
        names=("run",),
        guard="run",
        needs=RUN,
    )
    add(
        "sweep-resume-run",
        [*sweep_argv, "--resume", "--out", "run"],
        setup=copy("run"),
        names=("run",),
        guard="run",
        needs=RUN,
    )
    add(
        "sweep-into-trial",
        [*sweep_argv, "--out", "sweep/p0-numpy-seed0"],
        setup=copy("sweep"),
        names=("sweep",),
        guard="sweep",
        needs=("sweep",),
    )
    add(
        "compare-into-run",
        [
            "compare",
            "cartpole",
            "--backends",
            "numpy",
            "--seeds",
            "0",
            "--workers",
            "1",
            *TINY,
            "--out",
            "run",
        ],
        setup=copy("run"),
        names=("run",),
        guard="run",
        needs=RUN,
        timeout=120,
    )
    add(
        "compare-into-sweep",
        [
            "compare",
            "cartpole",
            "--backends",
            "numpy",
            "--seeds",
            "0",
            "--workers",
            "1",
            *TINY,
            "--out",
            "sweep",
        ],
        setup=copy("sweep"),
        names=("sweep",),
        guard="sweep",
        needs=("sweep",),
        timeout=120,
    )
    add(
        "sweep-resume-other-grid",
        [
            "sweep",
            "cartpole",
            "--set",
            "train.episodes=20",
            "--set",
            "log.progress=false",
            "--grid",
            "train.batch_episodes=5,20",
            "--workers",
            "1",
            "--resume",
            "--out",
            "sweep",
        ],
        setup=copy("sweep"),
        names=("sweep",),
        guard="sweep",
        needs=("sweep",),
    )
    add(
        "sweep-resume-corrupt-record",
        [*sweep_argv, "--resume", "--out", "sweep"],
        setup=steps(copy("sweep"), write("sweep/sweep.json", b"{not json")),
        names=("sweep.json",),
        guard="sweep",
        needs=("sweep",),
    )
    add(
        "sweep-resume-record-a-list",
        [*sweep_argv, "--resume", "--out", "sweep"],
        setup=steps(copy("sweep"), write("sweep/sweep.json", b"[1, 2]")),
        names=("sweep.json",),
        guard="sweep",
        needs=("sweep",),
    )
    add(
        "sweep-force-corrupt-record",
        [*sweep_argv, "--force", "--out", "sweep"],
        expect=(0, 2),
        setup=steps(copy("sweep"), write("sweep/sweep.json", b"{not json")),
        needs=("sweep",),
    )
    add(
        "sweep-force-record-a-list",
        [*sweep_argv, "--force", "--out", "sweep"],
        expect=(0, 2),
        setup=steps(copy("sweep"), write("sweep/sweep.json", b"[1, 2]")),
        needs=("sweep",),
    )
    add(
        "sweep-resume-nothing",
        [*sweep_argv, "--resume", "--out", "empty"],
        setup=act(lambda w: (w / "empty").mkdir()),
        names=("empty",),
        guard="empty",
    )
    add(
        "sweep-again-no-flag",
        [*sweep_argv, "--out", "sweep"],
        setup=copy("sweep"),
        names=("sweep",),
        guard="sweep",
        needs=("sweep",),
    )
    add(
        "train-again-no-flag",
        same_run(),
        setup=copy("run"),
        names=("run",),
        guard="run",
        needs=RUN,
        quick=True,
    )
    add(
        "train-resume-other-gamma",
        same_run(["--set", "train.gamma=0.5", "--resume"]),
        setup=copy("run"),
        names=("train.gamma",),
        guard="run",
        needs=RUN,
    )
    add(
        "train-resume-other-hidden",
        same_run(["--set", "policy.hidden_sizes=[8]", "--resume", "--allow-changes"]),
        setup=copy("run"),
        names=("checkpoint.npz",),
        guard="run",
        needs=RUN,
    )
    add(
        "train-resume-other-head",
        same_run(["--set", "policy.head=categorical", "--resume", "--allow-changes"]),
        setup=copy("run"),
        names=("checkpoint.npz",),
        guard="run",
        needs=RUN,
    )
    add(
        "train-resume-other-num-envs",
        same_run(["--set", "env.num_envs=3", "--resume"]),
        setup=copy("run"),
        names=("env.num_envs",),
        guard="run",
        needs=RUN,
    )
    add(
        "train-resume-other-env",
        same_run(
            [
                "--set",
                "env.id=Acrobot-v1",
                "--set",
                "train.solved_mean100=-100",
                "--resume",
                "--allow-changes",
            ]
        ),
        setup=copy("run"),
        names=("Acrobot-v1",),
        guard="run",
        needs=RUN,
    )
    add(
        "train-resume-force",
        same_run(["--resume", "--force"]),
        setup=copy("run"),
        names=("--force",),
        guard="run",
        needs=RUN,
    )
    add(
        "train-resume-empty-dir",
        same_run(["--resume"]),
        setup=act(lambda w: (w / "run").mkdir()),
        names=("checkpoint",),
        guard="run",
    )
    add("train-resume-missing-dir", same_run(["--resume"]), names=("checkpoint",), fresh="run")
    # a damaged run: --resume refuses it, naming the damaged file
    damaged = {
        "checkpoint-missing": (remove("run/checkpoint.npz"), "checkpoint"),
        "checkpoint-dir": (replace_with_dir("run/checkpoint.npz"), "checkpoint"),
        "metrics-missing": (remove("run/metrics.csv"), "metrics.csv"),
        "updates-missing": (remove("run/updates.csv"), "updates.csv"),
        "metrics-dir": (replace_with_dir("run/metrics.csv"), "metrics.csv"),
        "metrics-row-dropped": (edit_file("run/metrics.csv", drop_line(5)), "metrics.csv"),
        "metrics-rows-swapped": (edit_file("run/metrics.csv", swap_lines(3, 4)), "metrics.csv"),
        "metrics-header-changed": (
            edit_file("run/metrics.csv", lambda d: b"a,b,c" + d[d.index(b"\n") :]),
            "metrics.csv",
        ),
        "metrics-binary": (
            write("run/metrics.csv", np.random.default_rng(3).bytes(3000)),
            "metrics.csv",
        ),
        "metrics-nul": (
            edit_file("run/metrics.csv", lambda d: d.replace(b",", b"\0", 3)),
            "metrics.csv",
        ),
        "metrics-last-steps-changed": (
            edit_file(
                "run/metrics.csv",
                lambda d: d[: d.rstrip().rfind(b"\n") + 1] + b"40,1,0.1,1.0,1.0,1.0,1,2\n",
            ),
            "metrics.csv",
        ),
        "updates-row-dropped": (edit_file("run/updates.csv", drop_line(1)), "updates.csv"),
    }
    for name, (damage, named) in damaged.items():
        add(
            f"train-resume-{name}",
            same_run(["--resume"]),
            setup=steps(copy("run"), damage),
            names=(named,),
            guard="run",
            needs=RUN,
        )
    # what a crash leaves behind: resumed, the rows come out exact
    leftovers = {
        "torn-row": steps(
            edit_file("run/metrics.csv", lambda d: d + b"41,2000,1."),
            edit_file("run/updates.csv", lambda d: d + b"3,6"),
        ),
        "rows-past-checkpoint": edit_file(
            "run/metrics.csv",
            lambda d: d + d.splitlines(keepends=True)[-1].replace(b"40,", b"41,", 1),
        ),
        "stale-temp-files": steps(
            write("run/.checkpoint.npz.abcd1234.tmp", b"PK"),
            write("run/.metrics.csv.0000.tmp", b"x"),
        ),
        "metrics-crlf": edit_file("run/metrics.csv", lambda d: d.replace(b"\n", b"\r\n")),
        "config-toml-missing": remove("run/config.toml"),
        "summary-corrupt": write("run/summary.json", b"{oops"),
    }
    for name, leftover in leftovers.items():
        add(
            f"train-resume-{name}",
            same_run(["--resume"]),
            expect=(0,),
            setup=steps(copy("run"), leftover),
            check=rows_ok("run", 40),
            needs=RUN,
        )
    add(
        "train-resume-finished",
        same_run(["--resume"]),
        expect=(0,),
        setup=copy("run"),
        check=rows_ok("run", 40),
        needs=RUN,
    )
    add(
        "train-resume-more-episodes",
        [
            "train",
            "cartpole",
            "--set",
            "train.episodes=80",
            "--set",
            "log.progress=false",
            "--resume",
            "--out",
            "run",
        ],
        expect=(0,),
        setup=copy("run"),
        check=rows_ok("run", 80),
        needs=RUN,
    )
    add(
        "train-resume-allow-changes",
        same_run(["--set", "train.gamma=0.5", "--resume", "--allow-changes"]),
        expect=(0,),
        setup=copy("run"),
        check=rows_ok("run", 40),
        needs=RUN,
    )
    add(
        "train-resume-header-only",
        same_run(["--resume"]),
        expect=(0,),
        setup=steps(
            copy("run"),
            remove("run/checkpoint.npz"),
            edit_file("run/metrics.csv", lambda d: d[: d.index(b"\n") + 1]),
        ),
        check=rows_ok("run", 40),
        needs=RUN,
    )
    add(
        "train-force",
        same_run(["--force"]),
        expect=(0,),
        setup=copy("run"),
        check=rows_ok("run", 40),
        needs=RUN,
    )
    add(
        "train-force-other-config",
        same_run(["--force", "--set", "policy.hidden_sizes=[8]"]),
        expect=(0,),
        setup=copy("run"),
        check=rows_ok("run", 40),
        needs=RUN,
    )
    add(
        "train-live-lock-resume",
        same_run(["--resume"]),
        runner=lock_held("run"),
        setup=copy("run"),
        names=("another pgrl process",),
        needs=RUN,
    )
    add(
        "train-live-lock-force",
        same_run(["--force"]),
        runner=lock_held("run"),
        setup=copy("run"),
        names=("another pgrl process",),
        needs=RUN,
    )
    add("train-live-lock-new", same_run(), runner=lock_held("run"), names=("another pgrl process",))
    add(
        "train-out-is-file",
        ["train", "cartpole", *TINY, "--out", "run/metrics.csv"],
        setup=copy("run"),
        names=("metrics.csv",),
        guard="run",
        needs=RUN,
    )
    add(
        "train-out-under-file",
        ["train", "cartpole", *TINY, "--out", "run/metrics.csv/sub"],
        setup=copy("run"),
        names=("metrics.csv",),
        guard="run",
        needs=RUN,
    )
    add(
        "train-out-name-too-long",
        ["train", "cartpole", *TINY, "--out", "x" * 300],
        names=("--out",),
    )
    add(
        "train-out-path-too-long",
        ["train", "cartpole", *TINY, "--out", "/".join(["y" * 200] * 25)],
        names=("--out",),
    )
    add(
        "train-out-dev-null",
        ["train", "cartpole", *TINY, "--out", "/dev/null"],
        names=("/dev/null",),
    )
    add("train-out-proc", ["train", "cartpole", *TINY, "--out", "/proc/pgrl-run"], names=("/proc",))
    add(
        "train-out-dangling-symlink",
        ["train", "cartpole", *TINY, "--out", "link"],
        expect=(0, 2),
        setup=act(lambda w: (w / "link").symlink_to("missing-target")),
    )
    # --init from a sweep, or from runs of another env, head or width: refused, naming it
    for name, fixture in (
        ("sweep-dir", "sweep"),
        ("acrobot", "run_acrobot"),
        ("categorical", "run_cat"),
        ("h16", "run_h16"),
    ):
        add(
            f"train-init-{name}",
            ["train", "cartpole", *TINY, "--init", fixture, "--out", "new"],
            setup=copy(fixture),
            names=(fixture,),
            fresh="new",
            needs=(fixture,),
        )
    add(
        "train-init-pong",
        ["train", "cartpole", *TINY, "--init", "pong", "--out", "new"],
        names=("pong",),
        fresh="new",
    )
    add(
        "train-init-empty-dir",
        ["train", "cartpole", *TINY, "--init", "empty", "--out", "new"],
        setup=act(lambda w: (w / "empty").mkdir()),
        names=("empty",),
        fresh="new",
    )
    add(
        "train-init-config-file",
        ["train", "cartpole", *TINY, "--init", "run/config.toml", "--out", "new"],
        setup=copy("run"),
        names=("config.toml",),
        fresh="new",
        needs=RUN,
    )
    add(
        "train-init-resume",
        same_run(["--init", "run", "--resume"]),
        setup=copy("run"),
        names=("--init",),
        guard="run",
        needs=RUN,
    )
    add(
        "train-init-run-dir",
        ["train", "cartpole", *TINY, "--init", "run", "--out", "new"],
        expect=(0,),
        setup=copy("run"),
        check=rows_ok("new", 40),
        needs=RUN,
    )
    add(
        "train-init-weights",
        ["train", "cartpole", *TINY, "--init", "weights.npz", "--out", "new"],
        expect=(0,),
        setup=copy("weights.npz"),
        check=rows_ok("new", 40),
        needs=("weights",),
    )
    add(
        "train-init-itself-force",
        same_run(["--init", "run", "--force"]),
        expect=(0,),
        setup=copy("run"),
        check=rows_ok("run", 40),
        needs=RUN,
    )
    add(
        "eval-run-dir",
        ["eval", "run", "--episodes", "1"],
        expect=(0,),
        setup=copy("run"),
        needs=RUN,
    )
    add(
        "eval-run-without-checkpoint",
        ["eval", "run", "--episodes", "1"],
        setup=steps(copy("run"), remove("run/checkpoint.npz")),
        names=("run",),
        guard="run",
        needs=RUN,
    )
    add(
        "eval-sweep-dir",
        ["eval", "sweep", "--episodes", "1"],
        setup=copy("sweep"),
        names=("sweep",),
        needs=("sweep",),
    )
    add(
        "export-onto-checkpoint",
        ["export", "run/checkpoint.npz", "run/checkpoint.npz"],
        setup=copy("run"),
        names=("checkpoint.npz",),
        guard="run",
        needs=RUN,
    )
    add(
        "export-onto-metrics",
        ["export", "run/checkpoint.npz", "run/metrics.csv"],
        setup=copy("run"),
        names=("metrics.csv",),
        guard="run",
        needs=RUN,
    )
    add(
        "export-into-dir",
        ["export", "run/checkpoint.npz", "run"],
        setup=copy("run"),
        names=("run",),
        guard="run",
        needs=RUN,
    )
    add(
        "export-a-weights-file",
        ["export", "weights.npz", "w2.npz"],
        setup=copy("weights.npz"),
        names=("weights.npz",),
        needs=("weights",),
    )
    add("export-run-dir", ["export", "run", "w.npz"], expect=(0, 2), setup=copy("run"), needs=RUN)
    add(
        "export-valid-then-eval",
        ["export", "run/checkpoint.npz", "w.npz"],
        expect=(0,),
        setup=copy("run"),
        check=lambda w, f, r: (
            None
            if run([sys.executable, "-m", "pgrl", "eval", "w.npz", "--episodes", "1"], w, 60).code
            == 0
            else ("wrong-exit", "the exported file does not play")
        ),
        needs=RUN,
    )
    return c


# ---------------------------------------------------------------------------------------------
# Class: kills at random times, then --resume


# what a signalled ``pgrl train`` may exit with: done before the signal (0), stopped at its
# last update (130 after Ctrl-C), or ended by the signal itself before Python could handle it
SIGNAL_EXITS = {signal.SIGKILL: {0, -9}, signal.SIGTERM: {0, -15}, signal.SIGINT: {0, 130, -2}}


def kill_runner(
    variant: str, kills: int, sig: int = signal.SIGKILL, during: str = "train", group: bool = True
):
    """Start the run, send ``sig`` after a random delay, ``kills`` times (each restart with
    --resume), then --resume to the end; the rows must equal the uninterrupted run's."""

    def runner(case: Case, work: Path, fixtures: Path):
        rng = random.Random(case.seed)
        shutil.copy2(fixtures / f"kill_{variant}.toml", work / "cfg.toml")
        ref = fixtures / f"ref_{variant}"
        span = json.loads((ref / "summary.json").read_text())["wall_time"] + 0.6
        base = [sys.executable, "-m", "pgrl", "train", "cfg.toml", "--out", "run"]
        if during == "force":
            shutil.copytree(fixtures / "run", work / "run")
        history = []
        for _ in range(kills):
            argv = base + next_flag(work / "run", during == "force")
            delay = rng.uniform(0.05, span)
            res = signal_after(argv, work, delay, sig, group)
            if res.stdout:  # processes of the killed run still alive
                return "hang", f"{'; '.join(history)}: {res.stdout}", res
            history.append(f"{signal.Signals(sig).name}@{delay:.2f}s->{res.code}")
            if "Traceback" in res.stderr:
                return "traceback", f"{'; '.join(history)}: {traceback_line(res.stderr)}", res
            if res.code not in SIGNAL_EXITS[sig]:
                return "wrong-exit", f"{'; '.join(history)}: {res.stderr[-300:]}", res
            if res.code == 130 and len(error_lines(res.stderr)) != 1:
                return "bad-message", f"{'; '.join(history)}: {res.stderr[-300:]}", res
            if res.code == 0:
                break
        argv = base + next_flag(work / "run", during == "force")
        res = run(argv, work, case.timeout)
        outcome, detail = classify(case, res)
        if outcome == "ok":
            found = check_rows(work / "run", None, ref)
            if found is not None:
                outcome, detail = found
        return outcome, f"{'; '.join(history)}; {detail}".strip("; "), res

    return runner


def next_flag(run_dir: Path, force: bool) -> list[str]:
    """How a user goes on: --force again after a killed --force; a run that holds a checkpoint
    or rows is resumed (pgrl starts afresh one killed before its first checkpoint)."""
    if force:
        return ["--force"]
    holds = any((run_dir / n).exists() for n in ("checkpoint.npz", "metrics.csv"))
    return ["--resume"] if holds else []


def signal_after(argv: list[str], cwd: Path, delay: float, sig: int, group: bool = True) -> Result:
    """Run ``argv``; after ``delay`` seconds send ``sig`` (SIGINT to the process, as Ctrl-C
    does to the foreground one; SIGKILL and SIGTERM to its group, or with ``group=False`` to
    the process alone, as the OOM killer does). The Result's stdout names processes of the
    group still alive 10 s after it ended."""
    t0 = time.perf_counter()
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env=child_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,
        )
        try:
            proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                if sig == signal.SIGINT or not group:
                    proc.send_signal(sig)
                else:
                    os.killpg(proc.pid, sig)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                kill_group(proc)
        left = "" if group else survivors(proc.pid, 10.0)
        kill_group(proc)
        err.seek(0)
        text = err.read().decode(errors="replace")
    return Result(proc.returncode, left, text, time.perf_counter() - t0)


def survivors(pgid: int, wait: float) -> str:
    """The processes of group ``pgid`` alive after ``wait`` seconds ("" if none)."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return ""
        time.sleep(0.2)
    ps = subprocess.run(["ps", "-o", "pid=,stat=", "-g", str(pgid)], capture_output=True, text=True)
    return f"processes of the killed run alive after {wait:g} s: {' '.join(ps.stdout.split())}"


def sweep_kill_runner(case: Case, work: Path, fixtures: Path):
    """SIGKILL a local sweep (its whole process group, as a closed terminal would), then
    --resume it: every trial's rows exact."""
    rng = random.Random(case.seed)
    argv = [sys.executable, "-m", "pgrl", "sweep", "cartpole", "--grid"]
    argv += ["train.batch_episodes=10,20", "--set", "train.episodes=200", "--workers", "1"]
    argv += ["--set", "log.progress=false", "--set", "train.checkpoint_every=2", "--out", "sw"]
    delay = rng.uniform(1.0, 4.0)
    killed = signal_after(argv, work, delay, signal.SIGKILL)
    again = argv + (["--resume"] if (work / "sw" / "sweep.json").exists() else [])
    res = run(again, work, case.timeout)
    outcome, detail = classify(case, res)
    if outcome == "ok":
        for trial in ("p0-numpy-seed0", "p1-numpy-seed0"):
            found = check_rows(work / "sw" / trial)
            if found is not None:
                outcome, detail = found
                break
    return outcome, f"SIGKILL@{delay:.2f}s->{killed.code}; {detail}".strip("; "), res


def kill_cases() -> list[Case]:
    cases = []
    n = 0
    for variant in KILL_VARIANTS:
        for kills in (1, 2, 3):
            n += 1
            cases.append(
                Case(
                    "kill",
                    f"sigkill-{variant}-x{kills}",
                    ["train", f"kill_{variant}.toml", "--out", "run", "(killed, --resume)"],
                    (0,),
                    runner=kill_runner(variant, kills),
                    needs=(f"ref_{variant}",),
                    timeout=180,
                    seed=n,
                    quick=variant == "every1" and kills == 1,
                )
            )
    for kills in (1, 2):
        n += 1
        cases.append(
            Case(
                "kill",
                f"sigkill-parent-only-processes-x{kills}",
                ["train", "kill_processes.toml", "--out", "run", "(parent killed, --resume)"],
                (0,),
                runner=kill_runner("processes", kills, group=False),
                needs=("ref_processes",),
                timeout=180,
                seed=n,
            )
        )
    for variant in ("every1", "every7", "baseline", "processes"):
        for sig in (signal.SIGINT, signal.SIGTERM):
            n += 1
            cases.append(
                Case(
                    "kill",
                    f"{signal.Signals(sig).name.lower()}-{variant}",
                    ["train", f"kill_{variant}.toml", "--out", "run", "(signalled, --resume)"],
                    (0,),
                    runner=kill_runner(variant, 2, sig),
                    needs=(f"ref_{variant}",),
                    timeout=180,
                    seed=n,
                )
            )
    for seed in (101, 102):
        cases.append(
            Case(
                "kill",
                f"sigkill-during-force-{seed}",
                ["train", "kill_every1.toml", "--force", "--out", "run", "(killed, --force)"],
                (0,),
                runner=kill_runner("every1", 1, during="force"),
                needs=("ref_every1", "run"),
                timeout=180,
                seed=seed,
            )
        )
    for seed in range(301, 306):
        cases.append(
            Case(
                "kill",
                f"sigkill-export-{seed}",
                ["export", "run/checkpoint.npz", "w.npz", "(killed)"],
                (0,),
                runner=export_kill_runner,
                needs=("run",),
                seed=seed,
            )
        )
    cases.append(
        Case(
            "kill",
            "read-while-training",
            ["eval", "run/checkpoint.npz", "(while training)"],
            (0,),
            runner=read_while_training,
            needs=("ref_every1",),
            timeout=180,
        )
    )
    for resume in (False, True):
        cases.append(
            Case(
                "kill",
                f"two-at-once-{'resume' if resume else 'fresh'}",
                ["train", "kill_every1.toml", "--out", "run", "(twice at once)"],
                (0,),
                runner=concurrent_runner(resume),
                needs=("ref_every1",),
                timeout=180,
            )
        )
    for seed in (201, 202):
        cases.append(
            Case(
                "kill",
                f"sigkill-sweep-{seed}",
                ["sweep", "cartpole", "--grid", "train.batch_episodes=10,20", "(killed, --resume)"],
                (0,),
                runner=sweep_kill_runner,
                timeout=300,
                seed=seed,
            )
        )
    return cases


def export_kill_runner(case: Case, work: Path, fixtures: Path):
    """SIGKILL ``pgrl export`` at a random time: the weights file is whole or absent."""
    shutil.copytree(fixtures / "run", work / "run")
    delay = random.Random(case.seed).uniform(0.05, 1.2)
    argv = [sys.executable, "-m", "pgrl", "export", "run/checkpoint.npz", "w.npz"]
    res = signal_after(argv, work, delay, signal.SIGKILL)
    detail = f"SIGKILL@{delay:.2f}s->{res.code}"
    if (work / "w.npz").exists():
        try:
            arrays = load_npz(work / "w.npz")
            assert "kind" in arrays and "w_W1" in arrays, sorted(arrays)
        except Exception as e:
            return "corruption", f"{detail}: w.npz is torn: {type(e).__name__}: {e}", res
        return "ok", f"{detail}: whole", res
    return "ok", f"{detail}: absent", res


def read_while_training(case: Case, work: Path, fixtures: Path):
    """``pgrl eval`` and ``pgrl export`` of a run's checkpoint while the run rewrites it after
    every update: each reads a whole file (exit 0), or finds none yet (exit 2, one line)."""
    shutil.copy2(fixtures / "kill_every1.toml", work / "cfg.toml")
    train = [sys.executable, "-m", "pgrl", "train", "cfg.toml", "--out", "run"]
    proc = subprocess.Popen(
        train,
        cwd=work,
        env=child_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    readers = 0
    try:
        while proc.poll() is None and readers < 8:
            readers += 1
            argv = ["eval", "run/checkpoint.npz", "--episodes", "1"]
            if readers % 2:
                argv = ["export", "run/checkpoint.npz", f"w{readers}.npz"]
            reader = dataclasses.replace(case, argv=argv, expect=(0, 2), names=("checkpoint.npz",))
            res = run(reader.command(), work, 60)
            outcome, detail = classify(reader, res)
            if outcome != "ok":
                return outcome, f"{argv[0]} #{readers}: {detail}", res
        proc.wait(timeout=case.timeout)
    finally:
        kill_group(proc)
    found = check_rows(work / "run", None, fixtures / "ref_every1")
    return *(found or ("ok", f"{readers} reads while training")), Result(0, "", "", 0)


def concurrent_runner(resume: bool):
    """Two ``pgrl train`` into one directory at once: one runs, the other is refused in one
    line; the run's rows are the uninterrupted run's."""

    def runner(case: Case, work: Path, fixtures: Path):
        shutil.copy2(fixtures / "kill_every1.toml", work / "cfg.toml")
        argv = [sys.executable, "-m", "pgrl", "train", "cfg.toml", "--out", "run"]
        if resume:  # a run killed half way
            signal_after(argv, work, 1.0, signal.SIGKILL)
            argv = argv + next_flag(work / "run", False)
        results: list[Result] = []
        threads = [
            threading.Thread(target=lambda: results.append(run(argv, work, case.timeout)))
            for _ in range(2)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        codes = sorted(r.code for r in results)
        refused = [r for r in results if r.code != 0]
        if codes not in ([0, 2], [0, 0]) or any(r.timed_out for r in results):
            return "wrong-exit", f"exits {codes}", results[0]
        for r in refused:
            outcome, detail = classify(case, r)
            if "Traceback" in r.stderr or len(error_lines(r.stderr)) != 1:
                return "bad-message", f"the refused one: {r.stderr[-300:]}", r
        found = check_rows(work / "run", None, fixtures / "ref_every1")
        if found is not None:
            return *found, results[0]
        return "ok", f"exits {codes}", results[0]

    return runner


# ---------------------------------------------------------------------------------------------
# Class: a full disk (a small tmpfs; root only)


def disk_full_runner(size_kb: int):
    """Train into a tmpfs of ``size_kb``: the run fits, or stops with one line; then, with room
    made, the user goes on as the message says: rows exact as the uninterrupted run's."""

    def runner(case: Case, work: Path, fixtures: Path):
        mnt = work / "mnt"
        mnt.mkdir()
        options = f"size={size_kb}k"
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mnt)])
        if mounted.returncode != 0:
            return "ok", "skipped: cannot mount a tmpfs here", Result(0, "", "", 0)
        try:
            shutil.copy2(fixtures / "kill_every1.toml", work / "cfg.toml")
            argv = [sys.executable, "-m", "pgrl", "train", "cfg.toml", "--out", "mnt/run"]
            res = run(argv, work, case.timeout)
            outcome, detail = classify(dataclasses.replace(case, expect=(0, 1, 2)), res)
            if outcome != "ok":
                return outcome, f"on the full disk: {detail}", res
            if res.code == 0:
                found = check_rows(mnt / "run", None, fixtures / "ref_every1")
                return *(found or ("ok", "the run fits")), res
            subprocess.run(["mount", "-o", "remount,size=64m", str(mnt)], check=True)
            flag = next_flag(mnt / "run", False)
            again = run(argv + flag, work, case.timeout)
            outcome, detail = classify(case, again)
            if outcome == "ok":
                found = check_rows(mnt / "run", None, fixtures / "ref_every1")
                if found is not None:
                    outcome, detail = found
            line = error_lines(res.stderr)[0][:160]
            return outcome, f"full: {line}; then {' '.join(flag) or 'again'}: {detail}", again
        finally:
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True)

    return runner


def read_only_runner(case: Case, work: Path, fixtures: Path):
    """A run directory on a read-only filesystem: --resume and --force are refused in one line
    and the run is left as it was."""
    mnt = work / "mnt"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mnt)]).returncode:
        return "ok", "skipped: cannot mount a tmpfs here", Result(0, "", "", 0)
    try:
        shutil.copytree(fixtures / "run", mnt / "run")
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        before = digest(mnt / "run")
        res = run(case.command(), work, case.timeout)
        outcome, detail = classify(case, res)
        if outcome == "ok" and digest(mnt / "run") != before:
            outcome, detail = "corruption", "the run on the read-only filesystem changed"
        return outcome, detail, res
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def disk_full_cases() -> list[Case]:
    if os.geteuid() != 0 or sys.platform != "linux":
        return []
    read_only = [
        Case(
            "disk-full",
            f"read-only-{flag.strip('-') or 'new'}",
            ["train", "cartpole", *TINY, *([flag] if flag else []), "--out", f"mnt/{out}"],
            (2,),
            runner=read_only_runner,
            names=("mnt/",),
            needs=("run",),
        )
        for flag, out in (("--resume", "run"), ("--force", "run"), ("", "new"))
    ]
    return read_only + [
        Case(
            "disk-full",
            f"tmpfs-{kb}k",
            ["train", "kill_every1.toml", "--out", f"tmpfs-of-{kb}k/run", "(then --resume)"],
            (0,),
            runner=disk_full_runner(kb),
            needs=("ref_every1",),
            timeout=120,
        )
        for kb in (4, 12, 24, 40, 64, 100, 160, 240)
    ]


# ---------------------------------------------------------------------------------------------
# Class: names and values with control characters: still one line on stderr

NL = "a\nb"
CONTROL = [
    ("config-missing", ["train", f"{NL}.toml", "--out", "o"], None),
    ("config-syntax-error", ["train", f"{NL}.toml", "--out", "o"], (f"{NL}.toml", b"[train\n")),
    ("config-is-dir", ["check", f"{NL}.toml"], (f"{NL}.toml/x", b"")),
    ("out-is-file", ["train", "cartpole", *TINY, "--out", f"{NL}"], (NL, b"a file")),
    ("init-missing", ["train", "cartpole", *TINY, "--init", f"{NL}.npz", "--out", "o"], None),
    (
        "init-by-set",
        ["train", "cartpole", *TINY, "--set", 'train.init="x\ny.npz"', "--out", "o"],
        None,
    ),
    ("eval-missing", ["eval", f"{NL}.npz"], None),
    ("eval-corrupt", ["eval", f"{NL}.npz"], (f"{NL}.npz", b"PK\x03\x04garbage")),
    ("export-missing", ["export", f"{NL}.npz", "w.npz"], None),
    ("diagnose-missing", diagnose_argv(w=f"{NL}.npz"), None),
    ("sweep-out-file", ["sweep", "cartpole", "--out", NL], (NL, b"a file")),
    ("compare-out-file", ["compare", "cartpole", "--out", NL], (NL, b"a file")),
    ("set-key", ["train", "cartpole", "--set", "train.se\ned=1"], None),
    ("set-section", ["train", "cartpole", "--set", "tra\rin.seed=1"], None),
    ("grid-key", ["sweep", "cartpole", "--grid", "train.x\ny=1,2", "--out", "sw"], None),
    ("carriage-return", ["eval", "x\rpgrl eval: ok.npz"], None),
    ("escape-sequence", ["eval", "x\x1b[2Kdone.npz"], None),
    (
        "kwargs-key",
        ["train", "cartpole", *TINY, "--set", 'env.kwargs={"a\nb"=1}', "--out", "o"],
        None,
    ),
    ("argparse-choice", ["train", "cartpole", "--backend", "num\npy"], None),
]


def control_cases() -> list[Case]:
    cases = []
    for i, (name, argv, file) in enumerate(CONTROL):
        setup = None
        if file is not None:
            setup = write(*file)
        cases.append(
            Case(
                "control-chars",
                name,
                argv,
                (2,),
                steps(setup, copy("diag_B.npz", "diag_G.npz")),
                quick=i == 0,
            )
        )
    return cases


# ---------------------------------------------------------------------------------------------
# Class: the Python API: a config holding NumPy values and odd strings, written as TOML

API_TOML = """
import numpy as np, tomllib
from pgrl.config import load_config
cfg = load_config("cartpole")
{assign}
text = cfg.to_toml()
back = tomllib.loads(text)
assert {check}, back
"""
API = [
    ("np-float64", "cfg.train.gamma = np.float64(0.9)", 'back["train"]["gamma"] == 0.9'),
    ("np-float32", "cfg.train.gamma = np.float32(0.5)", 'back["train"]["gamma"] == 0.5'),
    ("np-int64", "cfg.train.seed = np.int64(7)", 'back["train"]["seed"] == 7'),
    ("np-int32", "cfg.train.episodes = np.int32(9)", 'back["train"]["episodes"] == 9'),
    ("np-bool", "cfg.policy.bias = np.bool_(False)", 'back["policy"]["bias"] is False'),
    ("np-str", "cfg.policy.dtype = np.str_('float32')", 'back["policy"]["dtype"] == "float32"'),
    (
        "np-array-sizes",
        "cfg.policy.hidden_sizes = np.array([8, 4])",
        'back["policy"]["hidden_sizes"] == [8, 4]',
    ),
    (
        "np-list-items",
        "cfg.policy.hidden_sizes = [np.int64(8)]",
        'back["policy"]["hidden_sizes"] == [8]',
    ),
    ("tuple-sizes", "cfg.policy.hidden_sizes = (8, 4)", 'back["policy"]["hidden_sizes"] == [8, 4]'),
    (
        "kwargs-np-values",
        "cfg.env.kwargs = {'max_episode_steps': np.int64(50), 'x': np.float64(0.25)}",
        'back["env"]["kwargs"] == {"max_episode_steps": 50, "x": 0.25}',
    ),
    (
        "string-newline",
        "cfg.train.init = 'a\\nb\\t\\x01\\x7f'",
        'back["train"]["init"] == "a\\nb\\t\\x01\\x7f"',
    ),
    (
        "kwargs-odd-keys",
        "cfg.env.kwargs = {'a b': 1, 'a.b': 2, '': 3, 'é': 4}",
        'back["env"]["kwargs"] == {"a b": 1, "a.b": 2, "": 3, "é": 4}',
    ),
    (
        "nan-inf",
        "cfg.env.kwargs = {'x': float('nan'), 'y': float('-inf')}",
        'str(back["env"]["kwargs"]) == "{\'x\': nan, \'y\': -inf}"',
    ),
]
# an env keyword argument that NumPy computed: the run's config.toml must stay readable
API_TRAIN = """
import numpy as np, pgrl
from pgrl.config import load_config
cfg = load_config("lunarlander_ppo", ["train.episodes=2", "log.progress=false", "env.num_envs=1"])
cfg.env.kwargs = {"gravity": np.float64(-9.0), "enable_wind": np.bool_(False)}
cfg.policy.hidden_sizes = [8]
pgrl.train(cfg, out="run")
again = load_config("run/config.toml", ["train.episodes=4"])
assert again.env.kwargs == {"gravity": -9.0, "enable_wind": False}, again.env.kwargs
pgrl.train(again, out="run", resume=True)
"""


def api_cases() -> list[Case]:
    cases = [
        Case(
            "api",
            name,
            [API_TOML.format(assign=assign, check=check)],
            (0,),
            api=True,
            quick=i == 0,
        )
        for i, (name, assign, check) in enumerate(API)
    ]
    cases.append(
        Case(
            "api",
            "train-resume-np-kwargs",
            [API_TRAIN],
            (0,),
            api=True,
            check=rows_ok("run", 4),
        )
    )
    return cases


# ---------------------------------------------------------------------------------------------

CLASSES: dict[str, Callable[[], list[Case]]] = {
    "config-syntax": config_syntax_cases,
    "config-types": config_type_cases,
    "config-ranges": config_range_cases,
    "config-unknown": config_unknown_cases,
    "env": env_cases,
    "set-values": set_cases,
    "grid-values": grid_cases,
    "flags": flag_cases,
    "npz": npz_cases,
    "diagnose": diagnose_cases,
    "rundir": rundir_cases,
    "kill": kill_cases,
    "control-chars": control_cases,
    "disk-full": disk_full_cases,
    "api": api_cases,
}


# --quick runs the cases marked quick where they are made, and these
QUICK = {
    "npz/eval-encrypted-flag",
    "npz/resume-unknown-compression",
    "npz/resume-wall-time-nan",
    "diagnose/weights-W99999999999",
    "env/sweep-env.id=Pendulum-v1",
    "rundir/train-live-lock-resume",
    "rundir/train-resume-torn-row",
    "kill/sigint-every1",
    "control-chars/eval-corrupt",
    "api/kwargs-odd-keys",
}


def all_cases(classes: list[str] | None = None) -> list[Case]:
    cases = [c for name, make in CLASSES.items() if not classes or name in classes for c in make()]
    ids = Counter(c.id for c in cases)
    dupes = [i for i, n in ids.items() if n > 1]
    if dupes:
        raise SystemExit(f"hostile.py: duplicate case names: {dupes[:5]}")
    return cases


class Progress:
    """tqdm when it is installed, else a line every few percent."""

    def __init__(self, total: int):
        try:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="case", dynamic_ncols=True)
        except ImportError:
            self.bar = None
        self.total, self.done, self.failed = total, 0, 0

    def update(self, row: dict) -> None:
        self.done += 1
        self.failed += row["outcome"] != "ok"
        if self.bar is not None:
            self.bar.set_postfix(failed=self.failed, refresh=False)
            self.bar.update()
        elif self.done % max(1, self.total // 20) == 0 or self.done == self.total:
            print(f"{self.done}/{self.total} cases, {self.failed} not ok", file=sys.stderr)

    def write(self, text: str) -> None:
        (self.bar.write if self.bar is not None else print)(text)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def table(rows: list[dict]) -> str:
    """Cases and outcomes per class, as a text table."""
    shown = [o for o in OUTCOMES if o == "ok" or any(r["outcome"] == o for r in rows)]
    shown += sorted({r["outcome"] for r in rows} - set(OUTCOMES))
    header = ["class", "cases", *shown]
    body = []
    for cls in dict.fromkeys(r["class"] for r in rows):
        counts = Counter(r["outcome"] for r in rows if r["class"] == cls)
        body.append([cls, sum(counts.values()), *(counts.get(o, 0) for o in shown)])
    counts = Counter(r["outcome"] for r in rows)
    body.append(["total", len(rows), *(counts.get(o, 0) for o in shown)])
    widths = [max(len(str(x)) for x in col) for col in zip(header, *body, strict=True)]
    lines = [
        "  ".join(
            str(x).rjust(w) if i else str(x).ljust(w)
            for i, (x, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in [header, *body]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.insert(len(lines) - 1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_report(path: Path, rows: list[dict], meta: dict) -> None:
    counts = Counter(r["outcome"] for r in rows)
    classes = {}
    for cls in dict.fromkeys(r["class"] for r in rows):
        classes[cls] = dict(Counter(r["outcome"] for r in rows if r["class"] == cls))
    report = {
        **meta,
        "cases": len(rows),
        "outcomes": dict(counts),
        "classes": classes,
        "results": rows,
    }
    write_atomic(path, json.dumps(report, indent=1) + "\n")
    text = io.StringIO()
    columns = [
        "class",
        "case",
        "outcome",
        "expected",
        "exit",
        "seconds",
        "detail",
        "command",
        "dir",
    ]
    writer = csv.DictWriter(text, columns)
    writer.writeheader()
    writer.writerows(rows)
    write_atomic(path.with_suffix(".csv"), text.getvalue())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=2, help="cases run at once (default 2)")
    parser.add_argument("--quick", action="store_true", help="a few cases of every class")
    parser.add_argument("--classes", nargs="+", choices=list(CLASSES), help="only these classes")
    parser.add_argument("--match", help="only cases whose class/name contains this text")
    parser.add_argument(
        "--report",
        type=Path,
        default=ROOT / "runs" / "hostile" / "report.json",
        help="JSON report (a CSV beside it); default %(default)s",
    )
    parser.add_argument("--keep", action="store_true", help="keep the cases' directories")
    parser.add_argument("--list", action="store_true", help="list the cases and exit")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error("--jobs must be >= 1")

    cases = all_cases(args.classes)
    if args.quick:
        cases = [c for c in cases if c.quick or c.id in QUICK]
    if args.match:
        cases = [c for c in cases if args.match in c.id]
    if args.list:
        for c in cases:
            print(f"{c.id}\texpect {show_expect(c)}\t{show_command(c)}")
        print(f"{len(cases)} cases", file=sys.stderr)
        return 0
    if not cases:
        print("hostile.py: no case selected", file=sys.stderr)
        return 2

    t0 = time.time()
    top = Path(tempfile.mkdtemp(prefix="pgrl-hostile-"))
    fixtures = top / "fixtures"
    fixtures.mkdir()
    rows: list[dict] = []
    try:
        needs = {n for c in cases for n in c.needs}
        needs |= {"run", "weights"} if any(c.cls == "npz" for c in cases) else set()
        print(f"hostile.py: {len(cases)} cases, {args.jobs} at a time, in {top}", file=sys.stderr)
        build_fixtures(needs, fixtures)
        progress = Progress(len(cases))
        lock = threading.Lock()

        def one(i: int, case: Case) -> dict:
            work = top / f"case{i:04d}"
            work.mkdir()
            row = execute(case, work, fixtures)
            if not args.keep and row["outcome"] == "ok":
                shutil.rmtree(work, ignore_errors=True)
            row["dir"] = str(work) if work.exists() else ""
            return row

        with ThreadPoolExecutor(args.jobs) as pool:
            futures = [pool.submit(one, i, c) for i, c in enumerate(cases)]
            for future in as_completed(futures):
                row = future.result()
                with lock:
                    rows.append(row)
                    progress.update(row)
                    if row["outcome"] != "ok":
                        progress.write(
                            f"{row['outcome']}: {row['class']}/{row['case']}: {row['detail'][:200]}"
                        )
        progress.close()
    finally:
        if not args.keep and all(r["outcome"] == "ok" for r in rows):
            shutil.rmtree(top, ignore_errors=True)
    order = {c.id: i for i, c in enumerate(cases)}
    rows.sort(key=lambda r: order[f"{r['class']}/{r['case']}"])
    seconds = round(time.time() - t0, 1)
    meta = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(t0)),
        "seconds": seconds,
        "jobs": args.jobs,
        "quick": args.quick,
        "python": sys.version.split()[0],
        "root": str(ROOT),
    }
    write_report(args.report, rows, meta)
    print(table(rows))
    failed = [r for r in rows if r["outcome"] != "ok"]
    for r in failed:
        print(
            f"\n{r['outcome']}: {r['class']}/{r['case']}\n  {r['command'][:300]}\n  {r['detail']}"
        )
    print(
        f"\n{len(rows)} cases in {seconds:.0f} s: {len(rows) - len(failed)} ok, {len(failed)} not; "
        f"report: {args.report} (and .csv)"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
