"""Reliability audit: attack a tiny run the way a hostile user would, and say what survived.

Usage:
    python benchmarks/reliability.py [--keep DIR] [--only PATTERN] [--list]

Trains tiny runs on synthetic data (tests/conftest.py: ``write_dataset``,
``write_image_folders``, ``TINY``; a few thousand weights, two epochs of 240 images)
and, each case in a fresh copy of a finished run or a fresh folder, does one hostile
thing to it, then runs the project's commands (``train.py``, ``evaluate.py``,
``embed.py``, ``retrieve.py``, ``visualize_embeddings.py``, ``search_hyperparams.py``,
``synthesize_results.py``) as subprocesses, each bounded by a timeout (a hang is a
failure; the whole process group is killed). Five categories, each case with its verdict:

  kills survived    SIGKILL at every named point of model/test_hooks.py
                    (TRIPLET_LOSS_TEST_HOOK=POINT:kill: locked, after_checkpoint,
                    export_staged, after_export, before_replace:<every file a run
                    replaces>) and by a timer mid-epoch, SIGTERM and SIGINT mid-epoch:
                    the rerun exits 0 and ends bitwise identical to an uninterrupted
                    run (newest and best checkpoint tensors, metrics_eval_*.json minus
                    train_minutes, verification.json, dataset.json, the resolved params,
                    the export's embeddings of a few images).
  damages handled   a finished run's files truncated, zeroed, garbled, deleted, a file
                    replaced by a folder or a folder by a file; then the readers
                    (evaluate.py, embed.py, visualize_embeddings.py) where relevant and
                    train.py. Handled: repaired (exit 0 and identical to the reference)
                    or exit 2 with exactly one stderr line "error: ..."; never a
                    traceback, a hang, or trained weights lost.
  bad inputs clean  broken params.json, every numeric key out of range, inconsistent
                    combinations, broken IDX files and class folders, hostile image
                    files, bad galleries, bad flags: exit 2, one stderr line "error: ...",
                    no traceback, nothing written into the run folder (file bytes
                    compared, .lock ignored), peak RSS under 3 GB. Class-folder entries
                    that docs/runs.md says are skipped may instead train (exit 0) with
                    a warning that names them.
  concurrency       a second train.py on a running one, evaluate.py while training,
                    two searches on one parent folder, a killed trainer's lock.
  security          planted symlinks (.lock, train.log, a checkpoint state file naming
                    files outside the run), symlink loops in class folders, params.json
                    linked to /dev/zero, a model_dir with spaces and newlines.

Prints one line per case (category, case, PASS/FAIL, detail) as it finishes, then a
table of counts per category; exits 1 if any case failed. Not part of pytest; a full
run takes about half an hour on a 2-core CPU machine (docs/runs.md).

Options:
  --keep DIR      work in DIR and keep every case's folder there (default: a temporary
                  folder, removed at the end)
  --only PATTERN  run only the cases whose "category: case" matches this regular
                  expression (case-insensitive), e.g. --only 'kills.*mid-epoch'
  --list          list the cases and exit
"""

import argparse
import collections
import functools
import json
import os
import random
import re
import shutil
import signal
import stat
import struct
import subprocess
import sys
import tempfile
import time
import traceback
import typing
import zlib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "tests"))

HOOK_ENV = "TRIPLET_LOSS_TEST_HOOK"
MAX_RSS_MB = 3 * 1024
TIME = "/usr/bin/time" if os.access("/usr/bin/time", os.X_OK) else None
TRAIN_TIMEOUT = 300  # a tiny run takes 10-25 s on 2 busy cores
READ_TIMEOUT = 240
QUICK_TIMEOUT = 120
CATEGORIES = {
    "kills": "kills survived",
    "damages": "damages handled",
    "bad inputs": "bad inputs clean",
    "concurrency": "concurrency",
    "security": "security",
}
# The environment of every subprocess: the user's, without a test hook.
BASE_ENV = {key: value for key, value in os.environ.items() if key != HOOK_ENV}
BASE_ENV["PYTHONDONTWRITEBYTECODE"] = "1"
# Checkpoint tensors that legitimately differ between an interrupted and an
# uninterrupted run: wall-clock seconds, the number of saves, the object graph proto.
VOLATILE_TENSORS = ("_CHECKPOINTABLE_OBJECT_GRAPH", "seconds/", "save_counter/")
# An export's fingerprint holds a fresh UUID: two exports of the same network differ there.
EXPORT_VOLATILE = ("fingerprint.pb",)
CKPT = "ckpt"


class Failed(Exception):
    """A case's verdict: failed, with the reason."""


def check(condition, message):
    if not condition:
        raise Failed(message)


# ----------------------------------------------------------------------------- processes

class Result(typing.NamedTuple):
    rc: typing.Optional[int]
    out: str
    err: str
    seconds: float
    maxrss_mb: float
    timed_out: bool
    command: str

    def lines(self):
        return [line for line in self.err.splitlines() if line.strip()]

    def summary(self):
        lines = self.lines()
        return f"exit {self.rc}, stderr {len(lines)} line(s): " + (
            short(" | ".join(lines[-3:]), 400) if lines else "(empty)")


def short(text, limit=220):
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


class Proc:
    """A script started in its own process group, its output in files (so that a test can
    watch its stderr while it runs) and its own peak RSS (``os.wait4``)."""

    def __init__(self, ctx, args, *, hook=None, timeout=TRAIN_TIMEOUT, cwd=REPO, env=None,
                 measure=False):
        self.ctx = ctx
        env = dict(BASE_ENV, **(env or {}))
        if hook:
            env[HOOK_ENV] = hook
        folder = tempfile.mkdtemp(prefix="proc-", dir=ctx.logs)
        self.out_path = os.path.join(folder, "stdout")
        self.err_path = os.path.join(folder, "stderr")
        self.command = " ".join(shellquote(arg) for arg in args) + (
            f"  [{HOOK_ENV}={hook}]" if hook else "")
        # The peak RSS: wait4's figure would count the pages of this (TensorFlow-sized)
        # process that the child shared until its exec, so GNU time measures from a small
        # process instead, where there is one.
        self.rss_path = os.path.join(folder, "maxrss") if measure and TIME else None
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            argv = [sys.executable, *args] if str(args[0]).endswith(".py") else list(args)
            if self.rss_path:
                argv = [TIME, "-q", "-f", "%M", "-o", self.rss_path, *argv]
            self.popen = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                          stdout=out, stderr=err, start_new_session=True)
        self.pid = self.popen.pid
        self.start = time.monotonic()
        self.deadline = self.start + timeout
        self.timeout = timeout
        self.rc = None
        self.maxrss_mb = 0.0
        ctx.live.add(self)

    def poll(self):
        if self.rc is None:
            pid, status, usage = os.wait4(self.pid, os.WNOHANG)
            if pid:
                self._reaped(status, usage)
        return self.rc

    def _reaped(self, status, usage):
        self.rc = os.waitstatus_to_exitcode(status)
        self.popen.returncode = self.rc  # reaped here: Popen must not wait for it again
        self.maxrss_mb = usage.ru_maxrss / 1024
        if self.rss_path:
            try:
                with open(self.rss_path) as f:
                    self.maxrss_mb = int(f.read().split()[-1]) / 1024
            except (OSError, ValueError, IndexError):
                pass
        self.seconds = time.monotonic() - self.start
        self.ctx.live.discard(self)
        self._kill_group()  # stragglers (a search's trainers)

    def _kill_group(self):
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def stderr(self):
        with open(self.err_path, "rb") as f:
            return f.read().decode(errors="replace")

    def wait_for(self, text, timeout=TRAIN_TIMEOUT):
        """Whether ``text`` appeared on stderr before the process ended or ``timeout``."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if text in self.stderr():
                return True
            if self.poll() is not None:
                return text in self.stderr()
            time.sleep(0.05)
        return False

    def signal(self, sig, group=False):
        if self.poll() is None:
            (os.killpg if group else os.kill)(self.pid, sig)

    def finish(self):
        """Wait for the end (the timeout kills the process group: a hang) -> Result."""
        timed_out = False
        while self.poll() is None:
            if time.monotonic() > self.deadline:
                timed_out = True
                self._kill_group()
                _, status, usage = os.wait4(self.pid, 0)
                self._reaped(status, usage)
                break
            time.sleep(0.05)
        with open(self.out_path, "rb") as f:
            out = f.read().decode(errors="replace")
        return Result(None if timed_out else self.rc, out, self.stderr(), self.seconds,
                      self.maxrss_mb, timed_out, self.command)


def shellquote(arg):
    arg = os.fsdecode(arg) if isinstance(arg, bytes) else str(arg)
    return arg if re.fullmatch(r"[\w./=:,@+-]+", arg) else repr(arg)


# ----------------------------------------------------------------------------- files

def snapshot(root, ignore=(".lock",)):
    """{relative path: kind and content digest} of everything below ``root`` (links not
    followed, FIFOs and devices not opened); ``ignore``: names at the top level."""
    import hashlib

    found = {}
    if not os.path.lexists(root):
        return found
    if not os.path.isdir(root) or os.path.islink(root):
        return {".": _entry(root, hashlib)}
    for folder, dirs, names in os.walk(root):
        for name in dirs + names:
            path = os.path.join(folder, name)
            rel = os.path.relpath(path, root)
            if rel in ignore:
                continue
            found[rel] = _entry(path, hashlib)
    return found


def _entry(path, hashlib):
    mode = os.lstat(path).st_mode
    if stat.S_ISLNK(mode):
        return ("link", os.readlink(path))
    if stat.S_ISDIR(mode):
        return ("dir",)
    if stat.S_ISREG(mode):
        with open(path, "rb") as f:
            return ("file", hashlib.sha256(f.read()).hexdigest())
    return ("special", stat.S_IFMT(mode))


def epoch_of(path):
    """The "epoch" of a JSON record (None when missing or unreadable)."""
    record = read_json(path)
    return record.get("epoch") if isinstance(record, dict) else None


def snapshot_diff(before, after):
    changed = sorted(set(before) ^ set(after) | {k for k in before if k in after
                                                  and before[k] != after[k]})
    return changed


def truncate(path):
    """Keep the first half: what a write cut off by a full disk or a crash leaves."""
    os.truncate(path, os.path.getsize(path) // 2)


def zero(path):
    """Same size, every byte 0: what some filesystems leave after a power cut."""
    size = os.path.getsize(path)
    with open(path, "wb") as f:
        f.write(bytes(size))


def garble(path):
    """Flip every ~50th byte from a third of the file on (the header stays plausible)."""
    with open(path, "rb") as f:
        data = bytearray(f.read())
    if len(data) < 64:
        data = bytearray(random.Random(path).randbytes(max(len(data), 16)))
    else:
        for i in range(len(data) // 3, len(data), max(1, len(data) // 50)):
            data[i] ^= 0xFF
    with open(path, "wb") as f:
        f.write(bytes(data))


def random_bytes(path):
    with open(path, "wb") as f:
        f.write(random.Random(7).randbytes(max(os.path.getsize(path), 64)))


def delete(path):
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    else:
        os.remove(path)


def file_to_folder(path):
    delete(path)
    os.mkdir(path)


def folder_to_file(path):
    delete(path)
    with open(path, "w") as f:
        f.write("not a folder\n")


def read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def write_json(path, values):
    with open(path, "w") as f:
        json.dump(values, f)


def set_params(model_dir, **changes):
    path = os.path.join(model_dir, "params.json")
    write_json(path, {**read_json(path), **changes})


def png_bytes(width, height, colour=False, fill=0):
    """A valid PNG of any size, written cheaply (zlib, one row at a time)."""
    channels = 3 if colour else 1

    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    compressor = zlib.compressobj(9)
    row = b"\x00" + bytes([fill]) * (width * channels)
    body = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 2 if colour else 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body)
            + chunk(b"IEND", b""))


def write_bytes(path, data):
    with open(path, "wb") as f:
        f.write(data)


def checkpoint_numbers(folder):
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    return sorted({int(m.group(1)) for m in (re.match(rf"^{CKPT}-(\d+)\.index$", n)
                                             for n in names) if m})


# ----------------------------------------------------------------------------- verdicts

def traceback_in(result):
    return "Traceback (most recent call last)" in result.err


def no_hang_no_traceback(result, what=""):
    what = f"{what}: " if what else ""
    check(not result.timed_out, f"{what}hang: killed after {result.seconds:.0f}s "
                                f"({result.command})")
    check(not traceback_in(result), f"{what}traceback: {result.summary()}")
    check(result.maxrss_mb < MAX_RSS_MB, f"{what}peak RSS {result.maxrss_mb:.0f} MB")


def one_line_error(result, what=""):
    """Exit 2, exactly one stderr line "error: ...", no traceback, no hang."""
    no_hang_no_traceback(result, what)
    lines = result.lines()
    what = f"{what}: " if what else ""
    check(result.rc == 2 and len(lines) == 1 and lines[0].startswith("error: "),
          f"{what}not a one-line error: {result.summary()}")
    return lines[0]


def is_one_line_error(result):
    lines = result.lines()
    return (result.rc == 2 and len(lines) == 1 and lines[0].startswith("error: ")
            and not traceback_in(result) and not result.timed_out)


def reader_handled(result, what):
    """A reader on a damaged run: exit 0 or a one-line error."""
    no_hang_no_traceback(result, what)
    if result.rc == 0:
        return f"{what} exit 0"
    one_line_error(result, what)
    return f"{what}: {short(result.lines()[0], 90)}"


# ----------------------------------------------------------------------------- context

class Context:
    """The work folder, the references (built once, on demand) and the live processes."""

    def __init__(self, work):
        self.work = work
        self.logs = os.path.join(work, "logs")
        self.refs = os.path.join(work, "refs")
        self.cases = os.path.join(work, "cases")
        for folder in (self.logs, self.refs, self.cases):
            os.makedirs(folder, exist_ok=True)
        self.live = set()
        self.built = {}
        self.counter = 0
        self._tf = None
        self.current = "case"

    # --- processes
    def start(self, *args, **kwargs):
        return Proc(self, [str(a) if not isinstance(a, bytes) else a for a in args], **kwargs)

    def run(self, *args, **kwargs):
        """Run a script to its end (its peak RSS measured unless it gets a test hook)."""
        kwargs.setdefault("measure", not kwargs.get("hook"))
        return self.start(*args, **kwargs).finish()

    def train(self, model_dir, data_dir, **kwargs):
        return self.run("train.py", "--model_dir", model_dir, "--data_dir", data_dir, **kwargs)

    def kill_all(self):
        for proc in list(self.live):
            proc._kill_group()
            try:
                proc.finish()
            except ChildProcessError:
                pass

    # --- folders
    def fresh(self, label="run"):
        self.counter += 1
        slug = re.sub(r"[^\w.-]+", "_", self.current)[:60]
        folder = os.path.join(self.cases, f"{self.counter:03d}-{slug}")
        os.makedirs(folder, exist_ok=True)
        return os.path.join(folder, label)

    def new_run(self, params=None, label="run", **changes):
        import conftest

        model_dir = self.fresh(label)
        os.makedirs(model_dir)
        write_json(os.path.join(model_dir, "params.json"),
                   {**(params or conftest.TINY), **changes})
        return model_dir

    def copy_of(self, ref, label="run"):
        model_dir = self.fresh(label)
        shutil.copytree(self.ref(ref), model_dir, symlinks=True)
        return model_dir

    # --- TensorFlow, for the comparisons (imported once, quietly)
    @property
    def tf(self):
        if self._tf is None:
            from model import cli

            cli.import_tensorflow()
            import tensorflow as tf

            self._tf = tf
        return self._tf

    # --- references
    def ref(self, name):
        if name not in self.built:
            self.built[name] = getattr(self, f"_build_{name}")()
        return self.built[name]

    def _trained(self, name, params, data):
        import conftest

        model_dir = os.path.join(self.refs, name)
        os.makedirs(model_dir)
        write_json(os.path.join(model_dir, "params.json"), {**conftest.TINY, **params})
        result = self.train(model_dir, self.ref(data))
        if result.rc != 0:
            raise Failed(f"the reference run {name} failed: {result.summary()}")
        return model_dir

    def _continued(self, name, source, data, **changes):
        model_dir = os.path.join(self.refs, name)
        shutil.copytree(self.ref(source), model_dir, symlinks=True)
        set_params(model_dir, **changes)
        result = self.train(model_dir, self.ref(data))
        if result.rc != 0:
            raise Failed(f"the reference run {name} failed: {result.summary()}")
        return model_dir

    def _build_data(self):
        import pathlib

        import conftest

        return conftest.write_dataset(pathlib.Path(self.refs) / "data")

    def _build_big_data(self):  # long enough epochs (~2 s) to be hit mid-epoch by a timer
        import pathlib

        import conftest

        return conftest.write_dataset(pathlib.Path(self.refs) / "big_data", num_train=4800)

    def _build_folders(self):
        import conftest

        return conftest.write_image_folders(os.path.join(self.refs, "folders"))

    def _build_run(self):
        return self._trained("run", {}, "data")

    def _build_run3(self):
        return self._continued("run3", "run", "data", num_epochs=3)

    def _build_big_run(self):
        return self._trained("big_run", {}, "big_data")

    def _build_val_run(self):
        return self._trained("val_run", {"validation_size": 40}, "data")

    def _build_folder_run(self):
        return self._trained("folder_run", {"cache": "file", "image_channels": 3,
                                            "eval_size": 50}, "folders")

    def _build_folder_run3(self):
        return self._continued("folder_run3", "folder_run", "folders", num_epochs=3)

    def _build_images(self):
        """Four 28x28 grey PNGs (embed.py queries) and the same pixels as an array."""
        import numpy as np

        folder = os.path.join(self.refs, "images")
        os.makedirs(folder)
        pixels = np.random.default_rng(0).integers(0, 256, (4, 28, 28)).astype(np.uint8)
        paths = []
        for index, image in enumerate(pixels):
            paths.append(os.path.join(folder, f"q{index}.png"))
            write_bytes(paths[-1], self.tf.io.encode_png(image[..., None]).numpy())
        return paths, pixels

    def _build_huge_png(self):
        path = os.path.join(self.refs, "huge.png")
        write_bytes(path, png_bytes(20000, 20000, colour=True))
        return path

    # --- comparisons
    def tensors(self, prefix):
        import numpy as np

        reader = self.tf.train.load_checkpoint(prefix)
        return {key: np.asarray(reader.get_tensor(key))
                for key in reader.get_variable_to_dtype_map()
                if not key.startswith(VOLATILE_TENSORS)}

    def embeddings(self, model_dir):
        """The export's embeddings of the four query images, as bytes (in a subprocess: a
        damaged SavedModel must not take the audit down), or an error text."""
        result = self.run(os.path.abspath(__file__), "--probe-export", model_dir,
                          timeout=READ_TIMEOUT)
        if result.rc != 0:
            return "unloadable: " + short(result.err.strip().splitlines()[-1:] or "?", 120)
        return result.out.strip()

    def ref_embeddings(self, ref):
        key = f"embeddings:{ref}"
        if key not in self.built:
            self.built[key] = self.embeddings(self.ref(ref))
        return self.built[key]

    def differences(self, model_dir, ref):
        """What differs between ``model_dir`` and the reference run ``ref`` (empty: identical)."""
        import numpy as np

        ref_dir = self.ref(ref)
        found = []
        for folder in ("checkpoints", "best"):
            mine = checkpoint_numbers(os.path.join(model_dir, folder))
            theirs = checkpoint_numbers(os.path.join(ref_dir, folder))
            if not mine or mine[-1] != theirs[-1]:
                found.append(f"{folder}/ newest {mine[-1:] or 'none'}, reference {theirs[-1:]}")
                continue
            name = f"{CKPT}-{mine[-1]}"
            try:
                a = self.tensors(os.path.join(model_dir, folder, name))
            except Exception as err:  # noqa: BLE001 - a damaged checkpoint is a finding
                found.append(f"{folder}/{name} unreadable ({short(err, 80)})")
                continue
            b = self.tensors(os.path.join(ref_dir, folder, name))
            # A resumed run may save a variable under another path of the object graph
            # (model/... instead of optimizer/_trainable_variables/...): compared by value
            # too, as a multiset, and by name where both have the name.
            differ = sorted(key for key in set(a) & set(b) if a[key].dtype != b[key].dtype
                            or not np.array_equal(a[key], b[key]))
            mine_only = collections.Counter(_digest(a[k]) for k in set(a) - set(b))
            theirs_only = collections.Counter(_digest(b[k]) for k in set(b) - set(a))
            missing = sorted(k for k in set(b) - set(a) if not mine_only[_digest(b[k])])
            extra = sorted(k for k in set(a) - set(b) if not theirs_only[_digest(a[k])])
            problems = [f"{len(differ)} differ ({differ[0]})"] if differ else []
            if missing:
                problems.append(f"{len(missing)} of the reference's missing ({missing[0]})")
            if extra:
                problems.append(f"{len(extra)} unmatched extra ({extra[0]})")
            if problems:
                found.append(f"{folder}/{name} tensors: " + ", ".join(problems))
        names = ["metrics_eval_untrained.json", "metrics_eval_last.json",
                 "metrics_eval_best.json", "metrics_test_untrained.json",
                 "metrics_test_best.json", "verification.json", "dataset.json"]
        for name in names:
            theirs = read_json(os.path.join(ref_dir, name))
            if theirs is None:
                continue
            mine = read_json(os.path.join(model_dir, name))
            if not isinstance(mine, dict):
                found.append(f"{name} missing or invalid")
                continue
            for values, folder in ((mine, model_dir), (theirs, ref_dir)):
                values.pop("train_minutes", None)
                if isinstance(values.get("checkpoint"), str):  # a path in the run: relative
                    values["checkpoint"] = os.path.relpath(values["checkpoint"], folder)
            if mine != theirs:
                keys = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
                found.append(f"{name} differs ({', '.join(keys[:3])})")
        mine = read_json(os.path.join(model_dir, "params_resolved.json"))
        theirs = read_json(os.path.join(ref_dir, "params_resolved.json"))
        if not isinstance(mine, dict) or mine.get("params") != theirs["params"]:
            found.append("params_resolved.json differs or is invalid")
        # The epoch: source.json also holds saved_model.pb's checksum, and the graph
        # names its functions by a per-process trace counter.
        if epoch_of(os.path.join(model_dir, "export", "source.json")) != epoch_of(
                os.path.join(ref_dir, "export", "source.json")):
            found.append("export/source.json differs or is invalid")
        elif (snapshot(os.path.join(model_dir, "export"), ignore=EXPORT_VOLATILE)
              != snapshot(os.path.join(ref_dir, "export"), ignore=EXPORT_VOLATILE)):
            # Not byte-identical (a re-export): compare what it computes.
            mine = self.embeddings(model_dir)
            if mine != self.ref_embeddings(ref):
                found.append(f"export embeddings differ ({short(mine, 80)})")
        return found

    def same_as(self, model_dir, ref, what="the rerun"):
        found = self.differences(model_dir, ref)
        check(not found, f"{what} differs from the uninterrupted reference: " + "; ".join(found))


def _digest(value):
    import hashlib

    return (value.dtype.str, value.shape, hashlib.sha256(value.tobytes()).hexdigest())


def probe_export(model_dir):
    """--probe-export: print the export's embeddings of the four query images (hex)."""
    import numpy as np

    from model import cli

    cli.import_tensorflow()
    import tensorflow as tf

    pixels = np.random.default_rng(0).integers(0, 256, (4, 28, 28)).astype(np.uint8)
    module = tf.saved_model.load(os.path.join(model_dir, "export"))
    print(np.asarray(module.embed(pixels).numpy(), np.float32).tobytes().hex())
    return 0


# ----------------------------------------------------------------------------- registry

CASES = []


def case(category, name):
    def register(function):
        CASES.append((category, name, function))
        return function
    return register


def add(category, name, function, *args, **kwargs):
    """Register ``function(ctx, *args, **kwargs)`` as a case."""
    CASES.append((category, name, lambda ctx: function(ctx, *args, **kwargs)))


# ============================================================================= kills

def survive_kill(ctx, point, prepare, ref, data="data", twice=False):
    """Kill train.py at ``point`` (SIGKILL through the test hook) in the folder that
    ``prepare`` makes, then rerun it: exit 0 and identical to ``ref``."""
    model_dir = prepare(ctx)
    data_dir = ctx.ref(data)
    kills = 0
    for _ in range(2 if twice else 1):
        killed = ctx.train(model_dir, data_dir, hook=f"{point}:kill")
        check(not killed.timed_out, f"hang before the kill point ({killed.command})")
        check(killed.rc == -signal.SIGKILL,
              f"the point {point} was never reached: {killed.summary()}")
        kills += 1
    rerun = ctx.train(model_dir, data_dir)
    no_hang_no_traceback(rerun, "rerun")
    check(rerun.rc == 0, f"rerun: {rerun.summary()}")
    ctx.same_as(model_dir, ref)
    return f"killed {kills}x, rerun exit 0, identical to the uninterrupted run"


def prepare_fresh(ctx, params=None, **changes):
    return ctx.new_run(params, **changes)


def prepare_copy(ctx, ref, damage=None, **changes):
    model_dir = ctx.copy_of(ref)
    if changes:
        set_params(model_dir, **changes)
    if damage:
        damage(model_dir)
    return model_dir


def best_epoch(ctx, ref="run"):
    return read_json(os.path.join(ctx.ref(ref), "metrics_eval_best.json"))["epoch"]


def cache_name(ctx, split="train", suffix=".npy"):
    """The name of the reference's cache file of ``split`` (the pixels, or the checksum)."""
    names = sorted(os.listdir(os.path.join(ctx.ref("folder_run"), "cache")))
    return next(name for name in names if name.startswith(split + "-") and name.endswith(suffix))


FOLDER_PARAMS = {"cache": "file", "image_channels": 3, "eval_size": 50}

for _point in ("after_checkpoint", "export_staged", "after_export",
               "before_replace:metrics_eval_untrained.json",
               "before_replace:metrics_eval_best.json", "before_replace:metrics_eval_last.json",
               "before_replace:dataset.json",
               "before_replace:verification.json", "before_replace:source.json"):
    add("kills", f"SIGKILL at {_point} (fresh run)", survive_kill, _point, prepare_fresh, "run")
add("kills", "SIGKILL at before_replace:params_resolved.json (num_epochs raised 2 -> 3)",
    survive_kill, "before_replace:params_resolved.json",
    functools.partial(prepare_copy, ref="run", num_epochs=3), "run3")
add("kills", "SIGKILL at before_replace:checkpoint (state file being repaired)", survive_kill,
    "before_replace:checkpoint",
    functools.partial(prepare_copy, ref="run",
                      damage=lambda d: os.remove(os.path.join(d, "checkpoints", "checkpoint"))),
    "run")
add("kills", "SIGKILL at before_replace:metrics_test_untrained.json (validation split)",
    survive_kill, "before_replace:metrics_test_untrained.json",
    functools.partial(prepare_fresh, validation_size=40), "val_run")
add("kills", "SIGKILL at before_replace:metrics_test_best.json (validation split)",
    survive_kill, "before_replace:metrics_test_best.json",
    functools.partial(prepare_fresh, validation_size=40), "val_run")


@case("kills", "SIGKILL at before_replace:ckpt-N.index (best/ being rebuilt)")
def kill_rebuilding_best(ctx):
    point = f"before_replace:{CKPT}-{best_epoch(ctx)}.index"
    return survive_kill(ctx, point, functools.partial(
        prepare_copy, ref="run", damage=lambda d: shutil.rmtree(os.path.join(d, "best"))), "run")


@case("kills", "SIGKILL at before_replace:<train cache .npy> (cache: file)")
def kill_writing_cache(ctx):
    point = f"before_replace:{cache_name(ctx)}"
    return survive_kill(ctx, point, functools.partial(prepare_fresh, **FOLDER_PARAMS),
                        "folder_run", data="folders")


@case("kills", "SIGKILL at before_replace:<train cache checksum .json> (cache: file)")
def kill_writing_cache_checksum(ctx):
    point = f"before_replace:{cache_name(ctx, suffix='.json')}"
    return survive_kill(ctx, point, functools.partial(prepare_fresh, **FOLDER_PARAMS),
                        "folder_run", data="folders")


def survive_signal(ctx, sig, when, group=False):
    """Send ``sig`` to a run on the larger data set mid-epoch (``when``: 1 or 2), by a
    timer; the kill must land inside the epoch (checked on disk), else it is retried."""
    data_dir = ctx.ref("big_data")
    ctx.ref("big_run")
    marker = "Untrained network" if when == 1 else "epoch 1/2"
    for delay in (0.8, 0.4, 1.2, 0.2):
        model_dir = ctx.new_run()
        proc = ctx.start("train.py", "--model_dir", model_dir, "--data_dir", data_dir)
        seen = proc.wait_for(marker)
        if seen:
            time.sleep(delay)
            proc.signal(sig, group=group)
        killed = proc.finish()
        check(not killed.timed_out, f"hang after {signal.Signals(sig).name}: {killed.summary()}")
        done = checkpoint_numbers(os.path.join(model_dir, "checkpoints"))
        if seen and done == list(range(1, when)):
            break
    else:
        raise Failed(f"audit could not land the signal inside epoch {when} (checkpoints {done})")
    note = ""
    if sig == signal.SIGINT and traceback_in(killed):
        note = "; the interrupted run printed a traceback"
    rerun = ctx.train(model_dir, data_dir)
    no_hang_no_traceback(rerun, "rerun")
    check(rerun.rc == 0, f"rerun: {rerun.summary()}")
    ctx.same_as(model_dir, "big_run")
    return (f"{signal.Signals(sig).name} {delay}s into epoch {when} (exit {killed.rc}), rerun "
            f"exit 0, identical{note}")


add("kills", "SIGKILL by a timer mid-epoch 2", survive_signal, signal.SIGKILL, 2)
add("kills", "SIGTERM mid-epoch 2", survive_signal, signal.SIGTERM, 2)
add("kills", "SIGINT (Ctrl-C to the process group) mid-epoch 2", survive_signal,
    signal.SIGINT, 2, group=True)


@case("kills", "evaluate.py SIGKILLed at before_replace:metrics_eval.json")
def kill_evaluate(ctx):
    model_dir = ctx.copy_of("run")
    data_dir = ctx.ref("data")
    first = ctx.run("evaluate.py", "--model_dir", model_dir, "--data_dir", data_dir,
                    timeout=READ_TIMEOUT)
    check(first.rc == 0, f"evaluate.py: {first.summary()}")
    before = read_json(os.path.join(model_dir, "metrics_eval.json"))
    killed = ctx.run("evaluate.py", "--model_dir", model_dir, "--data_dir", data_dir,
                     hook="before_replace:metrics_eval.json:kill", timeout=READ_TIMEOUT)
    check(killed.rc == -signal.SIGKILL, f"point never reached: {killed.summary()}")
    check(read_json(os.path.join(model_dir, "metrics_eval.json")) == before,
          "metrics_eval.json changed by the killed writer")
    leftovers = [n for n in os.listdir(model_dir) if n.endswith(".tmp")]
    rerun = ctx.run("evaluate.py", "--model_dir", model_dir, "--data_dir", data_dir,
                    timeout=READ_TIMEOUT)
    check(rerun.rc == 0 and not traceback_in(rerun), f"rerun: {rerun.summary()}")
    check(read_json(os.path.join(model_dir, "metrics_eval.json")) == before,
          "the rerun's metrics_eval.json differs")
    left = [n for n in os.listdir(model_dir) if n.endswith(".tmp")]
    check(not left, f"temporary files left after the rerun: {left}")
    return (f"old file intact after the kill ({len(leftovers)} temp file(s) left), rerun "
            "exit 0 with the same figures, no temp file")


# ============================================================================= damages

def damage_case(ctx, target, damage, readers=(), ref="run", data="data", continue_to=None):
    """Damage ``target`` (a path in a copy of the finished ``ref``, glob allowed) with
    ``damage``; run ``readers`` (evaluate / embed / visualize) then train.py.

    Handled: train.py repairs (exit 0, identical to ``ref``, or to ``continue_to`` after
    raising num_epochs) or refuses in one line leaving the checkpoints untouched; readers
    exit 0 or refuse in one line; never a traceback or a hang.
    """
    import glob

    model_dir = ctx.copy_of(ref)
    data_dir = ctx.ref(data)
    paths = sorted(glob.glob(os.path.join(glob.escape(model_dir), target)))
    check(paths, f"audit: nothing matches {target}")
    for path in paths:
        damage(path)
    notes = []
    for reader in readers:
        notes.append(run_reader(ctx, reader, model_dir, data_dir))
    try:
        return "; ".join(notes + [_train_on_damage(ctx, model_dir, data_dir, readers, ref,
                                                    continue_to)])
    except Failed as err:
        raise Failed("; ".join([str(err)] + notes)) from None


def _train_on_damage(ctx, model_dir, data_dir, readers, ref, continue_to):
    """train.py on the damaged run: repaired (identical to the reference) or refused in
    one line with the checkpoints untouched."""
    if continue_to:
        set_params(model_dir, num_epochs=3)
    weights_before = {folder: snapshot(os.path.join(model_dir, folder))
                      for folder in ("checkpoints", "best")}
    had_checkpoints = any(checkpoint_numbers(os.path.join(model_dir, folder))
                          for folder in ("checkpoints", "best"))
    result = ctx.train(model_dir, data_dir)
    no_hang_no_traceback(result, "train.py")
    if result.rc == 0:
        check("Untrained network" not in result.err or not had_checkpoints,
              "train.py restarted from epoch 0 beside checkpoint files")
        ctx.same_as(model_dir, continue_to or ref, "train.py's repair")
        after = [run_reader(ctx, reader, model_dir, data_dir, must_work=True)
                 for reader in readers if reader != "visualize"]
        verdict = "train.py repaired it (identical to the reference)"
        if after:
            verdict += "; readers work after the repair"
    else:
        line = one_line_error(result, "train.py")
        for folder, before in weights_before.items():
            check(snapshot(os.path.join(model_dir, folder)) == before,
                  f"train.py refused but changed {folder}/")
        verdict = f"train.py refused: {short(line, 110)}"
    return verdict


def run_reader(ctx, reader, model_dir, data_dir, must_work=False):
    paths, _ = ctx.ref("images")
    if reader == "embed":
        args = ["embed.py", "--model_dir", model_dir, *paths[:2]]
    elif reader == "evaluate_best":
        args = ["evaluate.py", "--model_dir", model_dir, "--data_dir", data_dir,
                "--checkpoint", "best"]
    elif reader == "visualize":
        args = ["visualize_embeddings.py", "--model_dir", model_dir, "--data_dir", data_dir]
    else:
        args = ["evaluate.py", "--model_dir", model_dir, "--data_dir", data_dir]
    result = ctx.run(*args, timeout=READ_TIMEOUT)
    name = os.path.basename(args[0]) + (" --checkpoint best" if reader == "evaluate_best" else "")
    if must_work:
        no_hang_no_traceback(result, f"{name} after the repair")
        check(result.rc == 0, f"{name} after the repair: {result.summary()}")
        return f"{name} exit 0"
    return reader_handled(result, name)


FILE_DAMAGES = {"truncated": truncate, "zeroed": zero, "garbled": garble, "deleted": delete,
                "replaced by a folder": file_to_folder}
DAMAGES = dict(FILE_DAMAGES, **{"random bytes": random_bytes})
FOLDER_DAMAGES = {"deleted": delete, "replaced by a file": folder_to_file}


def in_checkpoint_folders(damage):
    """``damage`` applied only to paths inside checkpoints/ or best/."""
    def apply(path):
        if os.path.basename(os.path.dirname(path)) in ("checkpoints", "best"):
            damage(path)
    return apply


# (target, damages, readers run on the damaged run before train.py). Every kind of damage
# on the newest checkpoint; elsewhere the kinds that take different paths through the
# code ("where meaningful": a truncated, zeroed or garbled JSON record is equally
# unparseable; random bytes are not even UTF-8; a folder at a name of the run's layout
# is refused by one check whatever the name).
DAMAGE_MATRIX = [
    (f"checkpoints/{CKPT}-2.index", FILE_DAMAGES, ("evaluate",)),
    (f"checkpoints/{CKPT}-2.data-00000-of-00001", ("garbled", "deleted", "replaced by a folder"),
     ("evaluate",)),
    ("checkpoints/checkpoint", ("random bytes", "replaced by a folder"), ("evaluate",)),
    (f"best/{CKPT}-*.index", ("garbled", "replaced by a folder"), ("evaluate_best",)),
    (f"best/{CKPT}-*.data-00000-of-00001", ("garbled",), ("evaluate_best",)),
    ("best/checkpoint", ("random bytes",), ("evaluate_best",)),
    ("metrics_eval_last.json", ("random bytes", "deleted", "replaced by a folder"), ()),
    ("metrics_eval_best.json", ("random bytes", "deleted"), ()),
    ("metrics_eval_untrained.json", ("deleted",), ()),
    ("params_resolved.json", ("random bytes",), ()),
    ("dataset.json", ("random bytes", "deleted"), ("evaluate",)),
    ("verification.json", ("random bytes", "deleted", "replaced by a folder"), ("embed",)),
    ("export/saved_model.pb", ("truncated", "garbled", "deleted", "replaced by a folder"),
     ("embed",)),
    ("export/variables/variables.index", ("garbled",), ("embed",)),
    ("export/variables/variables.data-00000-of-00001", ("truncated",), ("embed",)),
    ("export/source.json", ("random bytes", "deleted"), ("embed",)),
]
# The readers run on the first damage of each target (the others take the same path).


def _register_damages():
    for target, kinds, readers in DAMAGE_MATRIX:
        for number, label in enumerate(kinds):
            add("damages", f"{target} {label}", damage_case, target, DAMAGES[label],
                readers if number == 0 else ())
    add("damages", "checkpoints/ deleted", damage_case, "checkpoints", delete,
        ("evaluate", "visualize"))
    for target, readers in (("best", ("evaluate_best",)), ("export", ("embed",))):
        for label, damage in FOLDER_DAMAGES.items():
            add("damages", f"{target}/ {label}", damage_case, target, damage,
                readers if label == "deleted" else ())
    add("damages", "cache/ deleted (cache: file, training on to epoch 3)", damage_case,
        "cache", delete, ref="folder_run", data="folders", continue_to="folder_run3")
    add("damages", "cache/train-*.npy garbled (cache: file, training on to epoch 3)",
        damage_case, "cache/train-*.npy", garble, ref="folder_run", data="folders",
        continue_to="folder_run3")
    add("damages", "cache/train-*.json (checksum) random bytes (cache: file, epoch 3)",
        damage_case, "cache/train-*.json", random_bytes, ref="folder_run", data="folders",
        continue_to="folder_run3")
    add("damages", "cache/test-*.npy garbled (cache: file, evaluate.py, epoch 3)", damage_case,
        "cache/test-*.npy", garble, ("evaluate",), ref="folder_run", data="folders",
        continue_to="folder_run3")

    def threshold(value, path):
        values = read_json(path)
        write_json(path, {**values, "threshold": value})

    add("damages", 'verification.json with "threshold": "x"', damage_case, "verification.json",
        functools.partial(threshold, "x"), ("embed",))
    add("damages", 'verification.json with "threshold": -1e308 and "epoch": "2"', damage_case,
        "verification.json", lambda p: write_json(p, {**read_json(p), "threshold": -1e308,
                                                      "epoch": "2"}), ("embed",))
    add("damages", "every checkpoint file of both folders random bytes (state files too)",
        damage_case, "*/*", in_checkpoint_folders(random_bytes), ("evaluate", "visualize"))
    add("damages", "every checkpoint of both folders deleted (state files kept)", damage_case,
        f"*/{CKPT}-*", in_checkpoint_folders(delete), ("evaluate",))
    add("damages", "ckpt-3_temp/ leftovers in checkpoints/ and best/", damage_case, "best",
        lambda p: [os.makedirs(os.path.join(os.path.dirname(p), folder, f"{CKPT}-3_temp"))
                   or write_bytes(os.path.join(os.path.dirname(p), folder, f"{CKPT}-3_temp",
                                               "part-00000-of-00001.data-00000-of-00001"),
                                  b"half") for folder in ("checkpoints", "best")])
    add("damages", "export.new-*/ and export.old-*/ leftovers", damage_case, "export",
        lambda p: [shutil.copytree(p, p + suffix) for suffix in (".new-x1", ".old-x2")],
        ("embed",))
    add("damages", "train.log replaced by a folder", damage_case, "train.log", file_to_folder)


_register_damages()


@case("damages", "checkpoints/ckpt-2.index truncated, repaired, then trained on to epoch 3")
def damaged_then_continued(ctx):
    """The repair must keep the whole training state (optimizer slots included): a run
    trained on from the repaired folder must equal the uninterrupted one."""
    model_dir = ctx.copy_of("run")
    data_dir = ctx.ref("data")
    truncate(os.path.join(model_dir, "checkpoints", f"{CKPT}-2.index"))
    repair = ctx.train(model_dir, data_dir)
    no_hang_no_traceback(repair, "train.py (repair)")
    check(repair.rc == 0, f"train.py (repair): {repair.summary()}")
    set_params(model_dir, num_epochs=3)
    result = ctx.train(model_dir, data_dir)
    no_hang_no_traceback(result, "train.py (epoch 3)")
    check(result.rc == 0, f"train.py (epoch 3): {result.summary()}")
    ctx.same_as(model_dir, "run3", "trained on after the repair")
    return "repaired, then epoch 3 identical to the uninterrupted 3-epoch run"


# ============================================================================= bad inputs

def clean_refusal(ctx, model_dir, args, watch=None, timeout=QUICK_TIMEOUT, accept_skip=None,
                  cwd=REPO):
    """Run ``args``: a one-line error, nothing written under ``watch`` (the run folder;
    default ``model_dir``). ``accept_skip``: text of a warning that may instead let the
    command succeed (entries the docs say are skipped)."""
    watch = watch or model_dir
    before = snapshot(watch)
    existed = os.path.lexists(watch)
    result = ctx.run(*args, timeout=timeout, cwd=cwd)
    no_hang_no_traceback(result)
    if accept_skip and result.rc == 0:
        check(re.search(accept_skip, result.err),
              f"exit 0 without a warning naming the entry: {result.summary()}")
        warning = next(line for line in result.lines() if re.search(accept_skip, line))
        return f"trained, skipping it: {short(warning, 120)} (RSS {result.maxrss_mb:.0f} MB)"
    line = one_line_error(result)
    if existed:
        changed = snapshot_diff(before, snapshot(watch))
        check(not changed, f"wrote into the folder: {changed[:4]} ({short(line, 100)})")
    else:
        check(not os.path.lexists(watch), f"created {watch}")
    return f"{short(line, 150)} (RSS {result.maxrss_mb:.0f} MB)"


def bad_params(ctx, content, data="data", timeout=QUICK_TIMEOUT):
    model_dir = ctx.fresh()
    os.makedirs(model_dir)
    path = os.path.join(model_dir, "params.json")
    if isinstance(content, TinyParams):
        write_bytes(path, content.text().encode())
    elif callable(content):
        content(path)
    else:
        write_bytes(path, content if isinstance(content, bytes) else content.encode())
    return clean_refusal(ctx, model_dir, ["train.py", "--model_dir", model_dir, "--data_dir",
                                          ctx.ref(data)], timeout=timeout)


class TinyParams:
    """The TINY params with ``changes``, as JSON text when the case runs (importing
    tests/conftest.py loads TensorFlow: not at registration, so --help stays quick)."""

    def __init__(self, **changes):
        self.changes = changes

    def text(self):
        import conftest

        return json.dumps({**conftest.TINY, **self.changes})


def _register_params():
    raw = {
        "params.json: broken JSON": '{"batch_size": 32,',
        "params.json: empty": "",
        "params.json: not UTF-8": b'{"margin": 0.5, "x\xff\xfe": 1}',
        "params.json: UTF-8 byte order mark": b"\xef\xbb\xbf{}",
        "params.json: UTF-16": '{"margin": 0.5}'.encode("utf-16"),
        "params.json: nested 100,000 deep": "[" * 100000 + "]" * 100000,
        "params.json: a list, not an object": "[1, 2]",
        "params.json: a nested object as a value": '{"margin": {"value": 0.5}}',
        "params.json: duplicate key": '{"margin": 0.5, "margin": 0.3}',
        "params.json: unknown key (typo)": '{"learnig_rate": 0.01}',
        "params.json: NaN": '{"margin": NaN}',
        "params.json: Infinity": '{"learning_rate": Infinity}',
        "params.json: -Infinity": '{"margin": -Infinity}',
        "params.json: 1e400 (overflows to inf)": '{"learning_rate": 1e400}',
        "params.json: 10^30 batch_size": '{"batch_size": 1000000000000000000000000000000}',
        "params.json: a 5000-digit number": '{"seed": ' + "9" * 5000 + "}",
        'params.json: batch_size "32" (a string)': '{"batch_size": "32"}',
        "params.json: batch_size 32.5": '{"batch_size": 32.5}',
        "params.json: batch_size true": '{"batch_size": true}',
        'params.json: l2_normalize "yes"': '{"l2_normalize": "yes"}',
        "params.json: triplet_strategy 3": '{"triplet_strategy": 3}',
        'params.json: triplet_strategy "batch_foo"': '{"triplet_strategy": "batch_foo"}',
        'params.json: distance "L3"': '{"distance": "L3"}',
        'params.json: resize "zoom"': '{"resize": "zoom"}',
        'params.json: cache "disk"': '{"cache": "disk"}',
        'params.json: distribution "tpu"': '{"distribution": "tpu"}',
        "params.json: train_classes []": '{"train_classes": []}',
        "params.json: train_classes [1, 1]": '{"train_classes": [1, 1]}',
        "params.json: train_classes [-1]": '{"train_classes": [-1]}',
        "params.json: validation_classes 1": '{"validation_classes": 1}',
        "params.json: num_labels 1e9 (a float)": '{"num_labels": 1e9}',
        # Inconsistent combinations (model/params.py _check_consistency).
        "combo: num_classes_per_batch without num_images_per_class":
            '{"num_classes_per_batch": 4}',
        "combo: P x K != batch_size": TinyParams(num_classes_per_batch=4,
                                                 num_images_per_class=4),
        "combo: P > num_labels": TinyParams(num_classes_per_batch=8, num_images_per_class=4,
                                           num_labels=4),
        "combo: image_channels 2": '{"image_channels": 2}',
        "combo: 5 conv blocks on 28 px": '{"num_conv_blocks": 5}',
        "combo: augment_translate 28 on 28 px": '{"augment_translate": 28}',
        'combo: squared with distance "angular"': '{"squared": true, "distance": "angular"}',
        "combo: validation_classes and validation_size": TinyParams(validation_classes=2,
                                                                   validation_size=10),
        "combo: soft_margin with batch_semihard": TinyParams(soft_margin=True,
                                                            triplet_strategy="batch_semihard"),
    }
    for name, content in raw.items():
        add("bad inputs", name, bad_params, content)
    # Data-dependent: checked against the data, after TensorFlow loads.
    data_bound = {
        "params vs data: num_labels 1000000000 on IDX": TinyParams(num_labels=10**9),
        "params vs data: num_labels 5, labels 0-9": TinyParams(num_labels=5),
        "params vs data: eval_size 1 (cannot calibrate)": TinyParams(eval_size=1),
        "params vs data: validation_size 1000 of 240 images": TinyParams(validation_size=1000),
        "params vs data: train_classes [0, 42] (no class 42)": TinyParams(train_classes=[0, 42]),
        "params vs data: embedding_size 65536, num_channels 4096 (cannot fit)":
            TinyParams(embedding_size=65536, num_channels=4096),
    }
    for name, content in data_bound.items():
        add("bad inputs", name, bad_params, content, timeout=READ_TIMEOUT)


def _register_ranges():
    from model.params import FIELDS

    for name, field in FIELDS.items():
        meta = field.metadata
        args = typing.get_args(field.type)
        integer = field.type is int or int in args
        if not integer and not (field.type is float or float in args):
            continue
        step = 1 if integer else 0.5
        values = []
        if meta["at_least"] is not None:
            values.append(meta["at_least"] - step)
        if meta["above"] is not None:
            values.append(meta["above"])
        if meta["at_most"] is not None:
            values.append(meta["at_most"] + step)
        for value in values:
            add("bad inputs", f"out of range: {name} {value}", bad_params,
                json.dumps({name: value}))


_register_params()
_register_ranges()


@case("bad inputs", "params.json missing")
def params_missing(ctx):
    model_dir = ctx.fresh()
    os.makedirs(model_dir)
    return clean_refusal(ctx, model_dir, ["train.py", "--model_dir", model_dir,
                                          "--data_dir", ctx.ref("data")])


@case("bad inputs", "params.json is a FIFO")
def params_fifo(ctx):
    return bad_params(ctx, os.mkfifo)


@case("bad inputs", "params.json is a folder")
def params_folder(ctx):
    return bad_params(ctx, os.mkdir)


@case("bad inputs", "finished run: params.json margin changed")
def params_changed(ctx):
    model_dir = ctx.copy_of("run")
    set_params(model_dir, margin=0.3)
    return clean_refusal(ctx, model_dir, ["train.py", "--model_dir", model_dir,
                                          "--data_dir", ctx.ref("data")],
                         timeout=READ_TIMEOUT)


# --- IDX data

def bad_idx(ctx, damage, on_finished=False):
    """A copy of the IDX data with ``damage(data_dir)``, trained on (a fresh run, or a copy
    of the finished one resumed on it)."""
    data_dir = ctx.fresh("data")
    shutil.copytree(ctx.ref("data"), data_dir)
    damage(data_dir)
    model_dir = ctx.copy_of("run") if on_finished else ctx.new_run()
    return clean_refusal(ctx, model_dir, ["train.py", "--model_dir", model_dir,
                                          "--data_dir", data_dir], timeout=READ_TIMEOUT)


def gunzip(data_dir, name):
    import gzip

    path = os.path.join(data_dir, name + ".gz")
    with gzip.open(path, "rb") as f:
        data = f.read()
    os.remove(path)
    write_bytes(os.path.join(data_dir, name), data)
    return os.path.join(data_dir, name)


def rewrite_header(path, magic=None, count=None):
    with open(path, "r+b") as f:
        header = bytearray(f.read(8))
        if magic is not None:
            header[0:4] = struct.pack(">I", magic)
        if count is not None:
            header[4:8] = struct.pack(">I", count)
        f.seek(0)
        f.write(bytes(header))


TRAIN_IMAGES = "train-images-idx3-ubyte"
TRAIN_LABELS = "train-labels-idx1-ubyte"
IDX_DAMAGES = {
    "IDX: train images missing": lambda d: os.remove(os.path.join(d, TRAIN_IMAGES + ".gz")),
    "IDX: train images .gz truncated": lambda d: truncate(os.path.join(d, TRAIN_IMAGES + ".gz")),
    "IDX: train images wrong magic": lambda d: rewrite_header(gunzip(d, TRAIN_IMAGES),
                                                              magic=2052),
    "IDX: header claims 10^9 images": lambda d: rewrite_header(gunzip(d, TRAIN_IMAGES),
                                                               count=10**9),
    "IDX: train images is a FIFO": lambda d: (os.remove(os.path.join(d, TRAIN_IMAGES + ".gz")),
                                              os.mkfifo(os.path.join(d, TRAIN_IMAGES))),
    "IDX: train images is a link to /dev/zero": lambda d: (
        os.remove(os.path.join(d, TRAIN_IMAGES + ".gz")),
        os.symlink("/dev/zero", os.path.join(d, TRAIN_IMAGES))),
}


for _name, _damage in IDX_DAMAGES.items():
    add("bad inputs", _name, bad_idx, _damage)
add("bad inputs", "IDX: finished run resumed on data whose labels file is garbage", bad_idx,
    lambda d: random_bytes(os.path.join(d, TRAIN_LABELS + ".gz")), on_finished=True)


@case("bad inputs", "--data_dir missing")
def data_dir_missing(ctx):
    model_dir = ctx.new_run()
    missing = ctx.fresh("nowhere")
    result = clean_refusal(ctx, model_dir, ["train.py", "--model_dir", model_dir, "--data_dir",
                                            missing])
    check(not os.path.exists(missing), "the missing --data_dir was created")
    return result


@case("bad inputs", "--data_dir is a file")
def data_dir_file(ctx):
    model_dir = ctx.new_run()
    path = ctx.fresh("data.txt")
    write_bytes(path, b"x")
    return clean_refusal(ctx, model_dir, ["train.py", "--model_dir", model_dir, "--data_dir",
                                          path])


@case("bad inputs", "--model_dir is a file")
def model_dir_file(ctx):
    path = ctx.fresh("params.json")
    write_bytes(path, b"{}")
    return clean_refusal(ctx, path, ["train.py", "--model_dir", path, "--data_dir",
                                     ctx.ref("data")], watch=os.path.dirname(path))


# --- class folders

def bad_folders(ctx, damage, accept_skip=None, **changes):
    """A copy of the class folders with ``damage(root)``, a fresh 1-epoch run on them."""
    data_dir = ctx.fresh("folders")
    shutil.copytree(ctx.ref("folders"), data_dir, symlinks=True)
    damage(data_dir)
    model_dir = ctx.new_run(num_epochs=1, image_channels=3, eval_size=50, **changes)
    return clean_refusal(ctx, model_dir, ["train.py", "--model_dir", model_dir, "--data_dir",
                                          data_dir], timeout=TRAIN_TIMEOUT,
                         accept_skip=accept_skip)


def class_dir(root, split="train", index=0):
    return os.path.join(root, split, f"class_{index}")


def _single_class(root):
    for split in ("train", "test"):
        for name in os.listdir(os.path.join(root, split)):
            if name != "class_0":
                shutil.rmtree(os.path.join(root, split, name))


CLASS_FOLDER_INPUTS = {
    "folders: a FIFO named x.png in a class": (
        lambda r: os.mkfifo(os.path.join(class_dir(r), "x.png")), "Skipped"),
    "folders: a link to /dev/zero named zero.png": (
        lambda r: os.symlink("/dev/zero", os.path.join(class_dir(r), "zero.png")), "Skipped"),
    "folders: a 20000x20000 PNG": (None, "Skipped"),
    "folders: a file name that is not UTF-8": (
        lambda r: shutil.copy(os.path.join(class_dir(r), sorted(os.listdir(class_dir(r)))[0]),
                              os.path.join(os.fsencode(class_dir(r)), b"bad\xff\xfe.png")),
        "Skipped"),
    "folders: a class folder name that is not UTF-8": (
        lambda r: os.rename(os.fsencode(class_dir(r)), os.path.join(
            os.fsencode(os.path.join(r, "train")), b"class_\xff")), None),
    "folders: an empty class folder": (
        lambda r: os.mkdir(os.path.join(r, "train", "class_empty")), "Ignored"),
    "folders: a single class": (_single_class, None),
}


def _huge_png_in_class(ctx, root):
    os.symlink(ctx.ref("huge_png"), os.path.join(class_dir(root), "huge.png"))


for _name, (_damage, _skip) in CLASS_FOLDER_INPUTS.items():
    if _damage is None:
        CASES.append(("bad inputs", _name, lambda ctx, skip=_skip: bad_folders(
            ctx, functools.partial(_huge_png_in_class, ctx), accept_skip=skip)))
    else:
        add("bad inputs", _name, bad_folders, _damage, accept_skip=_skip)


# --- embed.py

def bad_embed(ctx, make, extra=(), model_dir=None):
    model_dir = model_dir or ctx.copy_of("run")
    path = ctx.fresh("input.png")
    make(path)
    paths, _ = ctx.ref("images")
    return clean_refusal(ctx, model_dir, ["embed.py", "--model_dir", model_dir, *extra,
                                          paths[0], path], timeout=READ_TIMEOUT)


EMBED_INPUTS = {
    "embed.py: a folder": os.mkdir,
    "embed.py: a FIFO": os.mkfifo,
    "embed.py: a text file named .png": lambda p: write_bytes(p, b"hello\n"),
    "embed.py: a 32x32 image without --resize": lambda p: write_bytes(p, png_bytes(32, 32)),
}
for _name, _make in EMBED_INPUTS.items():
    add("bad inputs", _name, bad_embed, _make)


@case("bad inputs", "embed.py --resize: a 20000x20000 PNG")
def embed_huge(ctx):
    return bad_embed(ctx, lambda p: os.symlink(ctx.ref("huge_png"), p), extra=["--resize"])


@case("bad inputs", "embed.py: a run that was never trained")
def embed_untrained(ctx):
    return bad_embed(ctx, lambda p: shutil.copy(ctx.ref("images")[0][1], p),
                     model_dir=ctx.new_run())


# --- retrieve.py

def bad_gallery(ctx, make, extra=()):
    model_dir = ctx.copy_of("run")
    gallery = ctx.fresh("gallery")
    make(gallery)
    paths, _ = ctx.ref("images")
    return clean_refusal(ctx, model_dir, ["retrieve.py", "--model_dir", model_dir, "--gallery",
                                          gallery, *extra, paths[0]], timeout=READ_TIMEOUT)


def _gallery_of(gallery, files):
    os.makedirs(gallery)
    for name, make in files.items():
        make(os.path.join(gallery, name))


GALLERIES = {
    "retrieve.py: gallery missing": lambda g: None,
    "retrieve.py: gallery empty": os.mkdir,
    "retrieve.py: gallery of 8 text files named .png": lambda g: _gallery_of(
        g, {f"{i}.png": lambda p: write_bytes(p, b"text") for i in range(8)}),
    "retrieve.py: gallery holding only a FIFO": lambda g: _gallery_of(g, {"x.png": os.mkfifo}),
}
for _name, _make in GALLERIES.items():
    add("bad inputs", _name, bad_gallery, _make)


@case("bad inputs", "retrieve.py: --k 50 on a gallery of 3 images")
def gallery_small(ctx):
    return bad_gallery(ctx, lambda g: _gallery_of(
        g, {f"{i}.png": lambda p: write_bytes(p, png_bytes(28, 28, fill=40)) for i in range(3)}),
        extra=["--k", "50"])


# --- the other readers

@case("bad inputs", "evaluate.py on a run that was never trained")
def evaluate_untrained(ctx):
    model_dir = ctx.new_run()
    return clean_refusal(ctx, model_dir, ["evaluate.py", "--model_dir", model_dir,
                                          "--data_dir", ctx.ref("data")], timeout=READ_TIMEOUT)


@case("bad inputs", "synthesize_results.py on a folder without results")
def synthesize_empty(ctx):
    parent = ctx.fresh("parent")
    os.makedirs(parent)
    return clean_refusal(ctx, parent, ["synthesize_results.py", "--parent_dir", parent])


@case("bad inputs", "search_hyperparams.py: a grid folder name over 255 bytes")
def search_long_name(ctx):
    import conftest

    parent = ctx.fresh("parent")
    os.makedirs(parent)
    write_json(os.path.join(parent, "params.json"), conftest.TINY)
    axes = [f"{key}={value}" for key, value in (
        ("learning_rate", 0.001), ("margin", 0.5), ("bn_momentum", 0.9), ("seed", 230),
        ("test_fraction", 0.2), ("augment_crop", 1.0), ("augment_brightness", 0.0),
        ("augment_contrast", 0.0), ("augment_translate", 0), ("keep_checkpoint_max", 5),
        ("num_parallel_calls", 4), ("validation_size", 0), ("num_conv_blocks", 2),
        ("image_size", 28), ("learning_rate_schedule", "constant"), ("resize", "pad"),
        ("triplet_strategy", "batch_all"), ("distribution", "none"), ("squared", "false"),
        ("use_batch_norm", "false"))]
    name = "-".join(axis.replace("=", "_", 1) for axis in axes)
    check(len(name.encode()) > 255, f"audit: the grid name is only {len(name)} bytes")
    args = ["search_hyperparams.py", "--parent_dir", parent, "--data_dir", ctx.ref("data"),
            "--grid", *axes]
    before = snapshot(parent)
    result = ctx.run(*args, timeout=TRAIN_TIMEOUT)
    no_hang_no_traceback(result)
    if result.rc == 0:  # a shortened folder name is a fine answer too
        trained = [folder for folder, _, names in os.walk(parent)
                   if "metrics_eval_last.json" in names]
        check(len(trained) == 1, f"exit 0 but {len(trained)} settings trained")
        return f"trained in a folder named in {len(os.path.basename(trained[0]))} bytes"
    line = one_line_error(result)
    changed = snapshot_diff(before, snapshot(parent))
    check(not changed, f"wrote into the parent folder: {changed[:4]} ({short(line, 100)})")
    return short(line, 150)


def search_bad_grid(ctx, axis):
    parent = ctx.fresh("parent")
    os.makedirs(parent)
    write_json(os.path.join(parent, "params.json"), {})
    return clean_refusal(ctx, parent, ["search_hyperparams.py", "--parent_dir", parent,
                                       "--grid", axis])


add("bad inputs", "search_hyperparams.py: an invalid value in the grid", search_bad_grid,
    "margin=0.2,-1")
add("bad inputs", "search_hyperparams.py: a grid axis without values", search_bad_grid,
    "margin")


# --- bad flags (argparse)

FLAGS = {
    "flags: train.py without --model_dir": ["train.py"],
    "flags: train.py --bogus": ["train.py", "--model_dir", "{run}", "--bogus"],
    "flags: evaluate.py --checkpoint newest": ["evaluate.py", "--model_dir", "{run}",
                                               "--checkpoint", "newest"],
    "flags: retrieve.py --k 0": ["retrieve.py", "--model_dir", "{run}", "--gallery", "{data}",
                                 "--k", "0", "{image}"],
    "flags: retrieve.py --k abc": ["retrieve.py", "--model_dir", "{run}", "--gallery",
                                   "{data}", "--k", "abc", "{image}"],
    "flags: embed.py without images": ["embed.py", "--model_dir", "{run}"],
    "flags: synthesize_results.py --which worst": ["synthesize_results.py", "--which",
                                                   "worst"],
}


def bad_flags(ctx, args):
    model_dir = ctx.copy_of("run")
    values = {"run": model_dir, "data": ctx.ref("data"), "image": ctx.ref("images")[0][0]}
    return clean_refusal(ctx, model_dir, [arg.format(**values) for arg in args])


for _name, _args in FLAGS.items():
    add("bad inputs", _name, bad_flags, _args)


# ============================================================================= concurrency

def paused_trainer(ctx, point):
    """A train.py of a new run, paused at the test hook ``point`` (the caller kills it)."""
    model_dir = ctx.new_run()
    data_dir = ctx.ref("data")
    first = ctx.start("train.py", "--model_dir", model_dir, "--data_dir", data_dir,
                      hook=f"{point}:pause")
    if not first.wait_for(f"test hook: {point}"):
        first.signal(signal.SIGKILL)
        first.finish()
        check(False, f"first never paused: {first.stderr()[-300:]}")
    return model_dir, data_dir, first


@case("concurrency", "a second train.py while the first holds the lock; the holder SIGKILLed "
                     "leaves no stale lock")
def second_trainer_locked(ctx):
    model_dir, data_dir, first = paused_trainer(ctx, "locked")
    try:
        second = ctx.train(model_dir, data_dir)
        line = one_line_error(second, "second train.py")
        check(f"pid {first.pid}" in line, f"the refusal does not name pid {first.pid}: {line}")
    finally:
        first.signal(signal.SIGKILL)
        first.finish()
    third = ctx.train(model_dir, data_dir)
    check(third.rc == 0 and not traceback_in(third), f"after the holder was killed: "
                                                     f"{third.summary()}")
    ctx.same_as(model_dir, "run")
    return f"second refused: {short(line, 90)}; after SIGKILL of the first, the rerun is identical"


@case("concurrency", "train.py and evaluate.py on a run paused mid-training, then SIGKILL")
def second_trainer_mid_run(ctx):
    model_dir, data_dir, first = paused_trainer(ctx, "after_checkpoint")
    try:
        second = ctx.train(model_dir, data_dir)
        line = one_line_error(second, "second train.py")
        reader = ctx.run("evaluate.py", "--model_dir", model_dir, "--data_dir", data_dir,
                         timeout=READ_TIMEOUT)
        note = reader_handled(reader, "evaluate.py")
    finally:
        first.signal(signal.SIGKILL)
        first.finish()
    rerun = ctx.train(model_dir, data_dir)
    check(rerun.rc == 0 and not traceback_in(rerun), f"rerun: {rerun.summary()}")
    ctx.same_as(model_dir, "run")
    return f"second refused ({short(line, 60)}); {note}; no stale lock, rerun identical"


@case("concurrency", "evaluate.py in a loop while train.py trains")
def evaluate_while_training(ctx):
    data_dir = ctx.ref("big_data")
    ctx.ref("big_run")
    model_dir = ctx.new_run()
    trainer = ctx.start("train.py", "--model_dir", model_dir, "--data_dir", data_dir)
    outcomes = []
    try:
        trainer.wait_for("Training ")
        while trainer.poll() is None and len(outcomes) < 8:
            reader = ctx.run("evaluate.py", "--model_dir", model_dir, "--data_dir", data_dir,
                             timeout=READ_TIMEOUT)
            outcomes.append(reader_handled(reader, "evaluate.py"))
    finally:
        result = trainer.finish()
    check(result.rc == 0 and not traceback_in(result), f"train.py: {result.summary()}")
    ctx.same_as(model_dir, "big_run", "the trainer")
    return f"{len(outcomes)} evaluations ({', '.join(sorted(set(outcomes)))}); trainer identical"


@case("concurrency", "two evaluate.py at once on a finished run")
def two_evaluations(ctx):
    model_dir = ctx.copy_of("run")
    data_dir = ctx.ref("data")
    procs = [ctx.start("evaluate.py", "--model_dir", model_dir, "--data_dir", data_dir,
                       timeout=READ_TIMEOUT) for _ in range(2)]
    results = [proc.finish() for proc in procs]
    for result in results:
        check(result.rc == 0 and not traceback_in(result), f"evaluate.py: {result.summary()}")
    check(isinstance(read_json(os.path.join(model_dir, "metrics_eval.json")), dict),
          "metrics_eval.json is not a JSON object")
    check(not [n for n in os.listdir(model_dir) if n.endswith(".tmp")], "temporary files left")
    return "both exit 0, metrics_eval.json whole"


@case("concurrency", "two retrieve.py at once on one gallery (index cache)")
def two_retrievals(ctx):
    model_dir = ctx.copy_of("run")
    paths, _ = ctx.ref("images")
    procs = [ctx.start("retrieve.py", "--model_dir", model_dir, "--gallery", ctx.ref("data"),
                       paths[0], timeout=READ_TIMEOUT) for _ in range(2)]
    results = [proc.finish() for proc in procs]
    for result in results:
        check(result.rc == 0 and not traceback_in(result), f"retrieve.py: {result.summary()}")
    check(results[0].out == results[1].out, "the two searches printed different neighbours")
    again = ctx.run("retrieve.py", "--model_dir", model_dir, "--gallery", ctx.ref("data"),
                    paths[0], timeout=READ_TIMEOUT)
    check(again.rc == 0 and again.out == results[0].out,
          f"a third search after them: {again.summary()}")
    return "both exit 0 with the same neighbours; a third reuses the index"


@case("concurrency", "two search_hyperparams.py at once on one parent folder")
def two_searches(ctx):
    import conftest

    parent = ctx.fresh("parent")
    os.makedirs(parent)
    write_json(os.path.join(parent, "params.json"), {**conftest.TINY, "num_epochs": 1})
    args = ["search_hyperparams.py", "--parent_dir", parent, "--data_dir", ctx.ref("data"),
            "--grid", "margin=0.3,0.5"]
    procs = [ctx.start(*args, timeout=2 * TRAIN_TIMEOUT) for _ in range(2)]
    results = [proc.finish() for proc in procs]
    for result in results:
        no_hang_no_traceback(result, "search")
    codes = sorted(result.rc for result in results)
    children = [os.path.join(parent, name) for name in ("margin_0.3", "margin_0.5")]
    incomplete = [os.path.basename(c) for c in children
                  if (read_json(os.path.join(c, "metrics_eval_last.json")) or {}).get("epoch") != 1
                  or not os.path.isfile(os.path.join(c, "export", "source.json"))]
    epochs = [open(os.path.join(c, "train.log")).read().count("epoch 1/1")
              if os.path.isfile(os.path.join(c, "train.log")) else 0 for c in children]
    check(not incomplete, f"settings left unfinished: {incomplete}")
    check(epochs == [1, 1], f"epochs trained per setting {epochs}")
    refused = [result for result in results if result.rc != 0]
    check(codes == [0, 0] or (codes == [0, 2] and is_one_line_error(refused[0])),
          "exits " + ", ".join(f"{r.rc}" for r in results) + "; the failing one: " +
          "; ".join(r.summary() for r in refused))
    return f"exits {codes}; every setting trained once"


# ============================================================================= security

@case("security", ".lock is a symlink to a file outside the run")
def lock_symlink(ctx):
    model_dir = ctx.copy_of("run")
    target = ctx.fresh("victim.txt")
    write_bytes(target, b"precious\n")
    before = os.stat(target)
    os.remove(os.path.join(model_dir, ".lock"))
    os.symlink(target, os.path.join(model_dir, ".lock"))
    line = clean_refusal(ctx, model_dir, ["train.py", "--model_dir", model_dir, "--data_dir",
                                          ctx.ref("data")], timeout=READ_TIMEOUT)
    with open(target, "rb") as f:
        check(f.read() == b"precious\n", "the link's target was written")
    check(os.stat(target).st_mtime_ns == before.st_mtime_ns, "the target's mtime changed")
    return line


@case("security", ".lock is a dangling symlink to a path outside the run")
def lock_dangling(ctx):
    model_dir = ctx.copy_of("run")
    target = ctx.fresh("created-by-train")
    os.remove(os.path.join(model_dir, ".lock"))
    os.symlink(target, os.path.join(model_dir, ".lock"))
    line = clean_refusal(ctx, model_dir, ["train.py", "--model_dir", model_dir, "--data_dir",
                                          ctx.ref("data")], timeout=READ_TIMEOUT)
    check(not os.path.lexists(target), "train.py created the link's target")
    return line


@case("security", "train.log is a symlink to a file outside the run")
def log_symlink(ctx):
    model_dir = ctx.copy_of("run")
    target = ctx.fresh("victim.log")
    write_bytes(target, b"precious\n")
    os.remove(os.path.join(model_dir, "train.log"))
    os.symlink(target, os.path.join(model_dir, "train.log"))
    result = ctx.train(model_dir, ctx.ref("data"), timeout=READ_TIMEOUT)
    no_hang_no_traceback(result)
    with open(target, "rb") as f:
        content = f.read()
    check(content == b"precious\n", f"train.py wrote through the link into {target} "
                                    f"({len(content) - 9} bytes appended; {result.summary()})")
    check(result.rc == 0 or is_one_line_error(result), result.summary())
    return f"target untouched; {result.summary()}"


@case("security", "a checkpoint state file listing checkpoints outside the run")
def state_outside(ctx):
    """CheckpointManager deletes the oldest checkpoints its state file lists: one listed
    outside the run must not be deleted when training goes on."""
    model_dir = ctx.copy_of("run")
    victim = ctx.fresh("victim")
    shutil.copytree(os.path.join(ctx.ref("run"), "checkpoints"), victim)
    before = snapshot(victim)
    outside = os.path.join(victim, f"{CKPT}-1")
    write_bytes(os.path.join(model_dir, "checkpoints", "checkpoint"),
                f'model_checkpoint_path: "{CKPT}-2"\n'
                f'all_model_checkpoint_paths: "{outside}"\n'
                f'all_model_checkpoint_paths: "{CKPT}-1"\n'
                f'all_model_checkpoint_paths: "{CKPT}-2"\n'.encode())
    set_params(model_dir, num_epochs=3, keep_checkpoint_max=2)
    result = ctx.train(model_dir, ctx.ref("data"))
    no_hang_no_traceback(result)
    lost = snapshot_diff(before, snapshot(victim))
    check(not lost, f"train.py deleted or changed files outside the run: {lost} "
                    f"({result.summary()})")
    check(result.rc == 0 or is_one_line_error(result), result.summary())
    return f"files outside untouched; {result.summary()}"


@case("security", "params.json is a symlink to /dev/zero")
def params_dev_zero(ctx):
    return bad_params(ctx, lambda p: os.symlink("/dev/zero", p))


def loop_case(ctx, make):
    data_dir = ctx.fresh("folders")
    shutil.copytree(ctx.ref("folders"), data_dir, symlinks=True)
    make(data_dir)
    model_dir = ctx.new_run(num_epochs=1, image_channels=3, eval_size=50)
    result = ctx.train(model_dir, data_dir)
    no_hang_no_traceback(result)
    if result.rc == 0:
        said = [line for line in result.lines() if re.match(r"(Skipped|Ignored) ", line)]
        return "trained, " + (f"saying: {short(said[0], 120)}" if said else "without a warning")
    return one_line_error(result)


add("security", "class folder: a symlink to its own parent (a loop)", loop_case,
    lambda r: os.symlink("..", os.path.join(class_dir(r), "loop")))
add("security", "class folder: a class that is a symlink to train/", loop_case,
    lambda r: os.symlink(".", os.path.join(r, "train", "class_loop")))
add("security", "class folder: an image that is a symlink to itself", loop_case,
    lambda r: os.symlink("self.png", os.path.join(class_dir(r), "self.png")))
add("security", "class folder: two class folders linked to each other", loop_case,
    lambda r: (os.symlink(os.path.join("..", "class_1"), os.path.join(class_dir(r), "to1")),
               os.symlink(os.path.join("..", "class_0"), os.path.join(class_dir(r, index=1),
                                                                       "to0"))))


@case("security", "a model_dir with spaces and a newline: train, evaluate, embed, retrieve")
def model_dir_newline(ctx):
    import conftest

    model_dir = ctx.fresh("my run\nwith  spaces")
    os.makedirs(model_dir)
    write_json(os.path.join(model_dir, "params.json"), conftest.TINY)
    data_dir = ctx.ref("data")
    result = ctx.train(model_dir, data_dir)
    check(result.rc == 0 and not traceback_in(result), f"train.py: {result.summary()}")
    ctx.same_as(model_dir, "run")
    paths, _ = ctx.ref("images")
    for args in (["evaluate.py", "--model_dir", model_dir, "--data_dir", data_dir],
                 ["embed.py", "--model_dir", model_dir, *paths[:2]],
                 ["retrieve.py", "--model_dir", model_dir, "--gallery", data_dir, paths[0]]):
        reader = ctx.run(*args, timeout=READ_TIMEOUT)
        check(reader.rc == 0 and not traceback_in(reader), f"{args[0]}: {reader.summary()}")
    return "trained identically; evaluate, embed and retrieve exit 0"


@case("security", "a model_dir with a newline: its error stays one line")
def model_dir_newline_error(ctx):
    model_dir = ctx.fresh("bad\nerror: forged line")
    os.makedirs(model_dir)
    write_bytes(os.path.join(model_dir, "params.json"), b'{"margin": -1}')
    return clean_refusal(ctx, model_dir, ["train.py", "--model_dir", model_dir, "--data_dir",
                                          ctx.ref("data")])


# ============================================================================= main

def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="\n\n".join(part for part in __doc__.split("\n\n")[2:]
                            if not part.startswith("Options:")),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", metavar="DIR",
                        help="work in DIR and keep every case's folders, logs and references "
                             "(default: a temporary folder, removed at the end)")
    parser.add_argument("--only", metavar="PATTERN",
                        help='run only the cases whose "category: case" matches this regular '
                             "expression (case-insensitive)")
    parser.add_argument("--list", action="store_true", help="list the cases and exit")
    parser.add_argument("--probe-export", metavar="MODEL_DIR", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def selected(pattern):
    cases = CASES
    if pattern:
        regex = re.compile(pattern, re.IGNORECASE)
        cases = [c for c in cases if regex.search(f"{c[0]}: {c[1]}")]
    return sorted(cases, key=lambda c: list(CATEGORIES).index(c[0]))


def main(argv=None):
    args = parse_args(argv)
    if args.probe_export:
        return probe_export(args.probe_export)
    cases = selected(args.only)
    if args.list:
        for category, name, _ in cases:
            print(f"{category}: {name}")
        print(f"{len(cases)} cases")
        return 0
    if not cases:
        print(f"no case matches {args.only!r} (see --list)", file=sys.stderr)
        return 2
    if args.keep:
        work = os.path.abspath(args.keep)
        os.makedirs(work, exist_ok=True)
        check_empty = os.listdir(work)
        if check_empty:
            print(f"{work} is not empty; give --keep a new or empty folder", file=sys.stderr)
            return 2
    else:
        work = tempfile.mkdtemp(prefix="reliability-")
    ctx = Context(work)
    ctx.tf  # before tests/conftest.py imports TensorFlow: quietly
    started = time.time()
    print(f"{len(cases)} cases; working in {work}", flush=True)
    print(f"{'category':<12} | {'case':<70} | verdict | detail", flush=True)
    outcomes = []
    try:
        for category, name, function in cases:
            ctx.current = f"{category} {name}"
            begin = time.time()
            try:
                detail = function(ctx)
                passed = True
            except Failed as err:
                passed, detail = False, str(err)
            except Exception as err:  # noqa: BLE001 - the audit's own failure, reported
                passed = False
                where = traceback.format_exc().strip().splitlines()
                detail = (f"audit error: {type(err).__name__}: {err} "
                          f"({short(' '.join(where[-5:-1]), 300)})")
            finally:
                ctx.kill_all()
            outcomes.append((category, name, passed, detail))
            print(f"{category:<12} | {name:<70} | {'PASS' if passed else 'FAIL':<7} | "
                  f"{short(detail, 600)} [{time.time() - begin:.0f}s]", flush=True)
    except KeyboardInterrupt:
        ctx.kill_all()
        print("interrupted", file=sys.stderr)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print()
    print("| category | passed |")
    print("|---|---|")
    for category, label in CATEGORIES.items():
        mine = [o for o in outcomes if o[0] == category]
        if mine:
            print(f"| {label} | {sum(o[2] for o in mine)} of {len(mine)} |")
    failed = [o for o in outcomes if not o[2]]
    print(f"\n{len(outcomes) - len(failed)} of {len(outcomes)} cases passed in "
          f"{(time.time() - started) / 60:.1f} min")
    for category, name, _, detail in failed:
        print(f"FAIL {category}: {name}: {short(detail, 400)}")
    return 1 if failed or len(outcomes) < len(cases) else 0


if __name__ == "__main__":
    sys.exit(main())
