"""The hostile-input campaign (scripts/hostile.py): its judgement of outcomes, its size, and its
quick subset run against this checkout with no case failing."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "hostile.py"


@pytest.fixture(scope="module")
def hostile():
    spec = importlib.util.spec_from_file_location("hostile", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["hostile"] = module  # dataclasses resolve the module's annotations through it
    spec.loader.exec_module(module)
    yield module
    del sys.modules["hostile"]


@pytest.mark.parametrize(
    "code, stderr, timed_out, outcome",
    [
        (2, "pgrl train: error: cfg.toml: 'train.seed' must be int, got 'x'\n", False, "ok"),
        (0, "", False, "silent-acceptance"),
        (2, "Traceback (most recent call last):\nValueError: boom\n", False, "traceback"),
        (1, "pgrl train: error: cfg.toml: 'train.seed' must be int\n", False, "wrong-exit"),
        (2, "usage: pgrl train\npgrl train: error: cfg.toml: 'train.seed'\n", False, "bad-message"),
        (2, "pgrl train: error: something else\n", False, "bad-message"),  # names no key
        (2, "pgrl train: error: a\rb cfg.toml 'train.seed'\n", False, "bad-message"),
        (None, "", True, "hang"),
    ],
)  # fmt: skip
def test_classify(hostile, code, stderr, timed_out, outcome):
    case = hostile.Case("c", "n", ["train", "cfg.toml"], (2,), names=("train.seed", "cfg.toml"))
    result = hostile.Result(code, "", stderr, 0.1, timed_out)
    assert hostile.classify(case, result)[0] == outcome


def test_rows_lost_and_repeated_are_found(hostile, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    header = ",".join(hostile.TIMING) + ",episode,update,return\n"
    (run / "updates.csv").write_text("update\n1\n2\n")
    (run / "summary.json").write_text(json.dumps({"episodes": 3, "updates": 2}))
    for episodes, outcome in (([1, 2, 3], None), ([1, 2, 2], "rows-lost"), ([1, 3], "rows-lost")):
        timing = ",".join("0" for _ in hostile.TIMING)
        rows = "".join(f"{timing},{e},1,1.0\n" for e in episodes)
        (run / "metrics.csv").write_text(header + rows)
        found = hostile.check_rows(run)
        assert (found and found[0]) == outcome, found


def test_the_campaign_has_at_least_500_cases_in_every_class(hostile):
    cases = hostile.all_cases()
    classes = {c.cls for c in cases}
    assert len(cases) >= 500
    assert classes >= set(hostile.CLASSES) - {"disk-full"}  # a tmpfs needs root
    assert all(c.expect for c in cases)


def test_quick_campaign_has_no_failures(tmp_path):
    report = tmp_path / "report.json"
    argv = [sys.executable, str(SCRIPT), "--quick", "--jobs", "2", "--report", str(report)]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    results = json.loads(report.read_text())["results"]
    failed = [f"{r['class']}/{r['case']}: {r['outcome']}: {r['detail']}" for r in results]
    failed = [f for r, f in zip(results, failed, strict=True) if r["outcome"] != "ok"]
    assert failed == [], "\n".join(failed)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert len(results) >= 30 and {r["class"] for r in results} >= {"npz", "kill", "rundir"}
    assert report.with_suffix(".csv").is_file()
