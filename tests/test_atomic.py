"""write_atomic: a file holds its old content or the new, never a part; no temp file stays."""

import os

import pytest

import pgrl.atomic
from pgrl.atomic import remove_temp_files, write_atomic


def test_bytes_text_and_a_callback_are_written_whole(tmp_path):
    write_atomic(tmp_path / "a.bin", b"\x00\x01")
    write_atomic(tmp_path / "b.csv", "x,y\r\n1,é\r\n")  # UTF-8, line ends as given
    write_atomic(tmp_path / "c.txt", lambda f: f.write(b"from a callback"))
    assert (tmp_path / "a.bin").read_bytes() == b"\x00\x01"
    assert (tmp_path / "b.csv").read_bytes() == "x,y\r\n1,é\r\n".encode()
    assert (tmp_path / "c.txt").read_bytes() == b"from a callback"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "b.csv", "c.txt"]
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "a.bin").stat().st_mode & 0o777 == 0o666 & ~umask  # as open() makes it


@pytest.mark.parametrize("error", [OSError(28, "No space left on device"), KeyboardInterrupt()])
def test_a_write_that_fails_midway_keeps_the_old_content_and_no_temp_file(tmp_path, error):
    path = tmp_path / "summary.json"
    path.write_text("old")

    def half_then_fail(f):
        f.write(b"new content, half of it")
        f.flush()
        assert len(list(tmp_path.glob(".*.json.*.tmp"))) == 1  # the temp file, beside
        raise error

    with pytest.raises(type(error)):
        write_atomic(path, half_then_fail)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]
    with pytest.raises(type(error)):
        write_atomic(tmp_path / "new.json", half_then_fail)
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]  # nothing half-made


def test_a_failed_rename_keeps_the_old_content_and_no_temp_file(tmp_path, monkeypatch):
    path = tmp_path / "config.toml"
    path.write_text("old")

    def no_rename(src, dst):
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(pgrl.atomic.os, "replace", no_rename)
    with pytest.raises(OSError, match="cross-device"):
        write_atomic(path, "new")
    assert [p.name for p in tmp_path.iterdir()] == ["config.toml"]
    assert path.read_text() == "old"


def test_the_data_is_fsynced_before_the_rename_and_the_directory_after(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))))
        real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", os.path.basename(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(pgrl.atomic.os, "fsync", fsync)
    monkeypatch.setattr(pgrl.atomic.os, "replace", replace)
    write_atomic(tmp_path / "checkpoint.npz", b"data")
    assert [kind for kind, _ in events] == ["fsync", "replace", "fsync"]
    assert events[0][1].startswith(".checkpoint.npz.") and events[0][1].endswith(".tmp")
    assert events[1:] == [("replace", "checkpoint.npz"), ("fsync", tmp_path.name)]


def test_temp_files_of_a_killed_writer_are_removed(tmp_path):
    stale = [tmp_path / ".metrics.csv.1a2b3c4d.tmp", tmp_path / ".checkpoint-x1y2.npz.tmp"]
    for path in stale:
        path.write_bytes(b"\0" * 10)
    (tmp_path / "metrics.csv").write_text("kept")
    remove_temp_files(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.csv"]
