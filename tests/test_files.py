"""Atomic writes, JSON reading and the model_dir lock (model/files.py), as units.

The kill-at-the-exact-point tests of the same guarantees, through a whole run, are in
tests/test_recovery.py.
"""

import os
import subprocess
import sys
import textwrap

import pytest

from model import files
from model.errors import UserError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def leftovers(folder):
    return sorted(name for name in os.listdir(folder) if name.endswith(".tmp"))


def test_write_replaces_the_content_and_leaves_no_temporary_file(tmp_path):
    path = str(tmp_path / "a.txt")
    files.write_text(path, "old")
    files.write_text(path, "new")
    assert open(path).read() == "new"
    assert leftovers(tmp_path) == []


def test_a_failed_write_keeps_the_old_file_and_removes_its_temporary(tmp_path):
    path = str(tmp_path / "a.json")
    files.write_json(path, {"epoch": 1})
    with pytest.raises(RuntimeError):
        with files.replaced_atomically(path) as tmp:
            with open(tmp, "w") as f:
                f.write('{"epoch": 2, "trunc')
            raise RuntimeError("killed half-way")
    assert files.read_json(path) == {"epoch": 1}
    assert leftovers(tmp_path) == []


def test_temporaries_of_dead_writers_are_swept_and_a_live_writers_kept(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead_pid = int(dead.stdout)
    live_pid = os.getppid()  # pytest's parent: alive for the whole test
    for pid in (dead_pid, live_pid):
        (tmp_path / f".a.txt.{pid}.x1.tmp").write_text("partial")
    (tmp_path / f".b.txt.{dead_pid}.x2.tmp").write_text("another file's")
    files.write_text(str(tmp_path / "a.txt"), "done")
    assert leftovers(tmp_path) == sorted([f".a.txt.{live_pid}.x1.tmp",
                                          f".b.txt.{dead_pid}.x2.tmp"])


def test_write_json_is_sorted_and_read_json_refuses_what_is_not_an_object(tmp_path):
    path = str(tmp_path / "m.json")
    files.write_json(path, {"b": 1, "a": [1, 2]})
    assert open(path).read().index('"a"') < open(path).read().index('"b"')
    assert files.read_json(path) == {"a": [1, 2], "b": 1}
    assert files.read_json(str(tmp_path / "missing.json")) is None
    for data in (b'{"a": 1', b"[1, 2]", b"\xff\xfe", b""):
        (tmp_path / "bad.json").write_bytes(data)
        assert files.read_json(str(tmp_path / "bad.json")) is None, data
    assert files.read_json(str(tmp_path)) is None  # a folder


HOLDER = textwrap.dedent("""
    import sys, time
    from model import files
    with files.exclusive_lock(sys.argv[1], ".lock"):
        print("locked", flush=True)
        time.sleep(60)
""")


def test_a_held_lock_refuses_a_second_holder_by_pid_until_its_process_dies(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], cwd=REPO,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(UserError, match=rf"in use by another train.py \(pid {holder.pid}\)"):
            with files.exclusive_lock(str(tmp_path), ".lock"):
                pass
    finally:
        holder.kill()
        holder.wait()
    # A killed holder leaves no stale lock: the operating system released it.
    with files.exclusive_lock(str(tmp_path), ".lock"):
        assert open(tmp_path / ".lock").read() == str(os.getpid())


def test_the_lock_is_not_reentrant(tmp_path):
    with files.exclusive_lock(str(tmp_path), ".lock"):
        with pytest.raises(UserError, match=rf"in use by another train.py \(pid {os.getpid()}\)"):
            with files.exclusive_lock(str(tmp_path), ".lock"):
                pass
        # Still held after the refused claim: another process is refused too.
        result = subprocess.run([sys.executable, "-c", HOLDER, str(tmp_path)], cwd=REPO,
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 1 and "in use by another train.py" in result.stderr
    with files.exclusive_lock(str(tmp_path), ".lock"):
        pass  # released


def test_a_lock_file_planted_as_a_symlink_is_refused_and_its_target_untouched(tmp_path):
    target = tmp_path / "precious.txt"
    target.write_text("keep me")
    os.symlink(target, tmp_path / ".lock")
    with pytest.raises(UserError, match=r"\.lock as the lock file \(a symbolic link\); remove it"):
        with files.exclusive_lock(str(tmp_path), ".lock"):
            pass
    assert target.read_text() == "keep me"


def test_a_lock_file_that_is_a_folder_is_one_line(tmp_path):
    (tmp_path / ".lock").mkdir()
    with pytest.raises(UserError, match=r"cannot use .*\.lock as the lock file \(Is a directory\)"):
        with files.exclusive_lock(str(tmp_path), ".lock"):
            pass


def test_written_files_follow_the_umask_like_any_file_the_user_creates(tmp_path):
    files.write_json(str(tmp_path / "a.json"), {"a": 1})
    open(tmp_path / "plain", "w").close()
    assert (os.stat(tmp_path / "a.json").st_mode & 0o777) == (
        os.stat(tmp_path / "plain").st_mode & 0o777)
