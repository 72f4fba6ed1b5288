"""The run directory's lifecycle, shared by every kind of run (online, offline):

- `prepare_run_dir`: create it, or say clearly why it cannot be written;
- `RunLock`: one process per run directory. An exclusive `flock` on `<run_dir>/.lock`, held for the
  whole run; the OS drops it when the process dies (however it dies), so a lock is never stale. The
  holder writes its host and pid into the file, and a second process stops at once naming them.
- `sigterm_as_interrupt`: SIGTERM (a cluster preempting the job) ends a run the way Ctrl-C does.
- `RunInterrupted`: raised by a run stopped that way; it carries the frame a rerun resumes from.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

LOCK_FILE = ".lock"
# An offline run's record of the dataset it trains on (that dataset's dataset.json, its path added):
# the report sets the run's score beside its data's mean return even where the dataset is not at hand.
DATASET_RECORD = "dataset_info.json"


class RunDirError(RuntimeError):
    """The run directory cannot be used (unwritable, or in use by another process: `holder` then
    says which, as its lock file names it)."""

    holder: str | None = None


class RunInterrupted(KeyboardInterrupt):
    """A run stopped by Ctrl-C or SIGTERM; `resume_frame` is where a rerun starts (None: from scratch)."""

    def __init__(self, resume_frame: int | None, signal_name: str = "Ctrl-C", clock: str = "frame") -> None:
        super().__init__(signal_name)
        self.resume_frame, self.signal_name, self.clock = resume_frame, signal_name, clock

    def message(self) -> str:
        where = (
            f"resumes from {self.clock} {self.resume_frame}"
            if self.resume_frame is not None
            else "starts from scratch (no checkpoint was written yet)"
        )
        return f"interrupted ({self.signal_name}); rerunning the same command {where}"


def prepare_run_dir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write_test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise RunDirError(
            f"run directory {path} is not writable ({e.strerror}); pass root=<writable folder> or run_dir=<path>"
        ) from None


def try_flock(path: Path) -> tuple[int, bool]:
    """Open (creating) `path` and try its exclusive `flock` without waiting: (descriptor, whether it
    is held). Closing the descriptor drops the lock; the caller closes it either way."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return fd, False
    return fd, True


class RunLock:
    """An exclusive lock on a run directory for the life of this object (or until `release`)."""

    def __init__(self, run_dir: Path) -> None:
        self._fd: int | None = None
        self.path = Path(run_dir) / LOCK_FILE
        fd, held = try_flock(self.path)
        if not held:
            holder = os.read(fd, 4096).decode(errors="replace").strip() or "holder unknown"
            os.close(fd)
            error = RunDirError(
                f"run directory {Path(run_dir)} is in use by another process ({holder}); "
                "wait for it to finish or stop it, or pass run_dir=<another path>"
            )
            error.holder = holder
            raise error from None
        os.ftruncate(fd, 0)
        os.write(
            fd, f"host {socket.gethostname()}, pid {os.getpid()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode()
        )
        self._fd = fd

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing the descriptor drops the flock

    def __del__(self) -> None:
        self.release()

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Inside the block SIGTERM raises KeyboardInterrupt("SIGTERM") in the main thread, so a preempted
    run unwinds like Ctrl-C (the checkpoint on disk is whole: checkpoints are written atomically)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise KeyboardInterrupt("SIGTERM")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
