"""pgrl.monitor: the tqdm bar's postfix, and Ctrl-C held while an update completes."""

import csv
import re
import signal
import threading

import pytest

from pgrl.config import load_config
from pgrl.monitor import HoldInterrupts, ProgressBar
from pgrl.reinforce import train

CARTPOLE = "configs/cartpole.toml"


@pytest.fixture
def sigint_handler():
    """A recording SIGINT handler installed for the test (pytest's own is restored after)."""
    calls = []

    def handler(signum, frame):
        calls.append(signum)

    before = signal.signal(signal.SIGINT, handler)
    yield handler, calls
    signal.signal(signal.SIGINT, before)


def test_hold_delivers_sigint_at_the_end_of_the_block(sigint_handler):
    handler, calls = sigint_handler
    hold = HoldInterrupts().install()
    try:
        reached = []
        with pytest.raises(KeyboardInterrupt):
            with hold:
                signal.raise_signal(signal.SIGINT)
                reached.append("after the signal")  # the block runs to its end
        assert reached == ["after the signal"]
        assert not hold.pending  # delivered once, not again at the next block's end
        with hold:
            pass
        # outside a block: at once
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)
            reached.append("never")
        assert reached == ["after the signal"]
    finally:
        hold.uninstall()
    assert signal.getsignal(signal.SIGINT) is handler
    assert calls == []  # the previous handler saw none of the held or raised signals
    signal.raise_signal(signal.SIGINT)
    assert calls == [signal.SIGINT]  # and it is the one in charge again


def test_hold_does_nothing_outside_the_main_thread(sigint_handler):
    handler, _ = sigint_handler
    done = []

    def body():
        hold = HoldInterrupts().install()
        with hold:
            pass
        hold.uninstall()
        done.append(hold.previous)

    thread = threading.Thread(target=body)
    thread.start()
    thread.join()
    assert done == [None]
    assert signal.getsignal(signal.SIGINT) is handler


def test_progress_bar_postfix(capsys):
    bar = ProgressBar(100, 40, "CartPole-v1 numpy")
    bar.update(20, 12.3456, 21.06, 1234.4)
    assert bar.bar.n == 60
    assert bar.bar.postfix == "mean100=21.1, running=12.35, sps=1234"
    bar.close()
    err = capsys.readouterr().err
    last = err.replace("\r", "\n").strip().splitlines()[-1]
    assert last.startswith("CartPole-v1 numpy:  60%") and "60/100" in last
    for shown in ("running=12.35", "mean100=21.1", "sps=1234"):
        assert shown in last, last

    remote = ProgressBar(100, 0, "remote")
    remote.update(
        10, 1.0, 2.0, 3.0, {"rollout": 1.5, "update": 0.25, "broadcast": 0.01, "transfer": 0.125}
    )
    assert "rollout=1.50s" in remote.bar.postfix and "transfer=0.12s" in remote.bar.postfix
    assert "broadcast=0.01s" in remote.bar.postfix and "update=0.25s" in remote.bar.postfix
    remote.update(10, 1.0, 2.0, 3.0, {"rollout": 1.5})  # local rollouts: no timing shown
    assert "rollout" not in remote.bar.postfix
    remote.close()
    capsys.readouterr()

    quiet = ProgressBar(100, 0, "quiet", enabled=False)
    quiet.update(20, 1.0, 2.0, 3.0)
    quiet.close()
    assert capsys.readouterr().err == ""


def test_training_bar_shows_the_last_episode(tmp_path, capsys):
    cfg = load_config(CARTPOLE, ["log.progress=true", "train.episodes=40"])
    summary = train(cfg, out=tmp_path)
    with open(tmp_path / "metrics.csv", newline="") as f:
        last_row = list(csv.DictReader(f))[-1]
    last = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()[-1]
    assert "40/40" in last, last
    assert f"running={float(last_row['running_return']):.2f}" in last, last
    assert f"mean100={float(last_row['mean100']):.1f}" in last, last
    sps = float(re.search(r"sps=(\d+)", last).group(1))
    assert sps == pytest.approx(summary["steps_per_second"], abs=1)
