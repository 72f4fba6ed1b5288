"""Checkpoints: tensors and plain values only, loaded with `weights_only=True`, kept in two generations.

A checkpoint folder holds `state.pt` (the newest generation: learner, optimizers, RNG states,
counters), `state.prev.pt` (the one before) and two payload folders, `replay_a` and `replay_b`
(memory-mapped replay), each state file naming the one it goes with. A save

  1. drops `state.prev.pt`: its payload folder is the one about to be rewritten;
  2. writes the payload into the folder `state.pt` does not name;
  3. writes the new state to a temporary file (fsync), links `state.pt` to `state.prev.pt`, and
     renames the new file over `state.pt`.

A kill, a full disk or an unwritable folder at any point leaves the previous generation whole, and
the state is checked for NaN/inf before anything is written (a diverged learner never replaces a
good checkpoint). On load, a newest generation that cannot be read falls back to the previous one,
with a warning that says what is lost.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from taco_rl.runners.core.guard import check_state, named_tensors

STATE, PREV, DAMAGED = "state.pt", "state.prev.pt", "state.damaged.pt"
PAYLOADS = ("replay_a", "replay_b")


class CheckpointError(RuntimeError):
    """A checkpoint cannot be read or written; the message says what to do."""


class CheckpointMismatch(CheckpointError):
    """A whole checkpoint of another configuration: refused, never fallen back from."""


class CheckpointWriteError(CheckpointError):
    """A checkpoint could not be written (disk full, unwritable); the previous one is whole."""


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load(path: Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt, truncated, or holds objects that weights_only refuses
        raise CheckpointError(f"cannot load checkpoint {path}: {_load_failure(e)}") from None


def _load_failure(e: Exception) -> str:
    """One line on why torch.load refused a file (its own texts run to a paragraph)."""
    text = str(e)
    if "weights only load failed" in text.lower():
        found = re.search(r"GLOBAL ([\w.]+)", text)
        what = f" ({found.group(1)})" if found else ""
        return (
            f"it holds a Python object{what} besides tensors and plain values, refused unrun "
            "(weights_only=True): not a checkpoint this code wrote, or a tampered one"
        )
    if "failed finding central directory" in text or "failed reading zip archive" in text:
        return "not a complete torch file (truncated or damaged)"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return f"{type(e).__name__}: {lines[0] if lines else 'no details'}"


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class Checkpoints:
    """The two newest generations of a run's state in `folder` (see the module docstring).

    `frame` is the run's clock (env frames online, learner updates offline) at the newest whole
    generation this object knows of (restored or saved; None before either), so an interrupted or
    failed run can say where a rerun resumes; each state stores it under "frame" too.
    """

    def __init__(self, folder: Path, clock: str = "frame") -> None:
        self.folder = Path(folder)
        self.clock = clock  # what `frame` counts, as messages name it ("frame" online, "update" offline)
        self.frame: int | None = None
        self._payload: str | None = None  # the payload folder state.pt names

    def exists(self) -> bool:
        return (self.folder / STATE).exists() or (self.folder / PREV).exists()

    # ------------------------------------------------------------------ load
    def restore(
        self, apply: Callable[[dict[str, Any], Path], None], warn: Callable[[str], None] | None = None
    ) -> dict[str, Any] | None:
        """Load the newest generation and hand it to `apply(state, payload_folder)`, which restores
        everything (learner, replay, ...) and raises CheckpointError when the payload is damaged.

        A newest generation that cannot be loaded or applied falls back to the previous one, with a
        warning; the damaged file is kept as `state.damaged.pt` and the previous generation becomes
        `state.pt`. Returns the state applied, or None when there is no checkpoint.
        """
        warn = warn or (lambda text: print(f"warning: {text}", file=sys.stderr, flush=True))
        if not self.exists():
            return None
        newest, prev = self.folder / STATE, self.folder / PREV
        failure = "is missing"
        if newest.exists():
            try:
                return self._apply(newest, apply)
            except CheckpointMismatch:
                raise
            except CheckpointError as e:
                failure = f"cannot be used ({e})"
                if not prev.exists():
                    raise CheckpointError(
                        f"{newest} {failure}; there is no earlier checkpoint to fall back to. "
                        "Pass a new run_dir= (or delete the run directory) to start over."
                    ) from None
        try:
            state = self._apply(prev, apply)
        except CheckpointMismatch:
            raise
        except CheckpointError as e:
            raise CheckpointError(
                f"both checkpoint generations in {self.folder} are unusable: {STATE} {failure}; "
                f"{PREV}: {e}. Pass a new run_dir= (or delete the run directory) "
                "to start over."
            ) from None
        if newest.exists():
            os.replace(newest, self.folder / DAMAGED)
        os.replace(prev, newest)
        _fsync_dir(self.folder)
        warn(
            f"{newest} {failure}; resumed from the previous checkpoint ({self.clock} {self.frame}) instead: "
            f"the training after {self.clock} {self.frame} up to the lost checkpoint is redone"
            + (f" (the unreadable file is kept as {self.folder / DAMAGED})" if (self.folder / DAMAGED).exists() else "")
        )
        return state

    def _apply(self, path: Path, apply: Callable[[dict[str, Any], Path], None]) -> dict[str, Any]:
        state = load(path)
        payload = state.get("replay_dir")
        if payload not in PAYLOADS:
            raise CheckpointError(f"{path} names no payload folder (replay_dir={payload!r})")
        apply(state, self.folder / payload)
        self._payload = payload
        frame = state.get("frame", state.get("counters", {}).get("frame"))
        self.frame = int(frame) if frame is not None else None
        return state

    # ------------------------------------------------------------------ save
    def save(
        self,
        state: dict[str, Any],
        frame: int,
        write_payload: Callable[[Path], None] | None = None,
        step: int | None = None,
        payload_bytes: Callable[[Path], int] | None = None,
    ) -> None:
        """Write a new generation: `write_payload(folder)` (if any) fills the payload folder, then
        `state` (with `frame`, `replay_dir` added) replaces state.pt. Raises NonFiniteError (before
        writing anything) if the state holds NaN/inf, CheckpointWriteError if the disk refuses or
        has less free space than `payload_bytes(folder)` plus the state need (checked first: a
        memory-mapped write into a full disk would kill the process instead of raising)."""
        check_state(state, step)
        payload = PAYLOADS[1] if self._payload == PAYLOADS[0] else PAYLOADS[0]
        state = {**state, "frame": int(frame), "replay_dir": payload}
        newest, prev = self.folder / STATE, self.folder / PREV
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            need = sum(t.numel() * t.element_size() for _, t in named_tensors(state)) + 2**20
            if payload_bytes is not None:
                need += payload_bytes(self.folder / payload)
            free = shutil.disk_usage(self.folder).free
            if free < need:
                raise CheckpointWriteError(self._write_failure(f"it needs about {_size(need)}, {_size(free)} is free"))
            prev.unlink(missing_ok=True)  # its payload folder is rewritten next
            if write_payload is not None:
                write_payload(self.folder / payload)
            tmp = self.folder / (STATE + ".tmp")
            try:
                with open(tmp, "wb") as f:
                    torch.save(state, f)
                    f.flush()
                    os.fsync(f.fileno())
                if newest.exists():
                    _link_or_copy(newest, prev)
                os.replace(tmp, newest)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
            _fsync_dir(self.folder)
        except CheckpointWriteError:
            raise
        except (OSError, RuntimeError) as e:
            reason = e.strerror if isinstance(e, OSError) and e.strerror else f"{type(e).__name__}: {e}"
            raise CheckpointWriteError(self._write_failure(reason)) from None
        self._payload, self.frame = payload, int(frame)

    def _write_failure(self, reason: str) -> str:
        kept = (
            f"the previous checkpoint ({self.clock} {self.frame}) is whole: free space or fix the folder and "
            "rerun the same command to resume from it"
            if self.frame is not None
            else "no earlier checkpoint exists: a rerun starts from scratch"
        )
        return f"cannot write a checkpoint to {self.folder} ({reason}); {kept}"


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def _link_or_copy(src: Path, dst: Path) -> None:
    """dst becomes a second name of src (a copy where the filesystem has no hard links)."""
    dst.unlink(missing_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        tmp = dst.with_name(dst.name + ".tmp")
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
