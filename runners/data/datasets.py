"""Offline datasets: a saved frame-once :class:`Replay` directory plus ``dataset.json``.

A dataset directory is exactly what ``Replay.save`` writes (``meta.json`` + ``storage-<id>/``
memory-mapped tensors) in *canonical* form: the held slots in chronological order, rows
``0 .. slots-1``, no ring wrap, capacity equal to the slots held (so nothing is reserved that is not
data, and the files are not sparse). ``dataset.json`` beside it says what it holds: task, frame
shape, action dim, episode and transition counts, return statistics, a sha256 checksum of the held
arrays and a free-form ``source``.

Learners never see file formats: importers (``runners/data/formats/``) and ``taco data`` stream
episodes into a :class:`DatasetWriter` (or hand a whole :class:`Replay` to :func:`write_dataset`),
:func:`load_dataset` opens the result read-only with the learner's own frame stack, n-step, gamma
and K (stacks and returns are built at sample time).

A dataset is written into a hidden temporary folder beside its destination, its arrays created at
their final size and filled episode by episode (memory holds about one episode, so datasets larger
than RAM can be written), and renamed into place once ``dataset.json`` is written, so an
interrupted write never looks like a complete dataset. A write that fails removes that folder; one
killed with SIGKILL cannot, so the next write of the same name removes such stale folders (each live
writer holds a lock on its own, which keeps it from being taken for stale).

Reading trusts nothing: every :func:`dataset_info` checks each array file's size against
``dataset.json``, and :func:`load_dataset` checks the checksum, computed once per version of the
files and recorded with their sizes, times and inodes (:func:`is_verified`): the first open of a
dataset reads it through once (sha256 runs at about 0.7 GB/s on one core of the 2-core test
machine, so ~30 s for 21 GB), later opens of unchanged files cost a few ``stat`` calls (~0.2 ms).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import json
import os
import shutil
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tensordict import TensorDict

from taco_rl.runners.core.replay import Replay, ReplayFormatError
from taco_rl.runners.core.rundir import try_flock

__all__ = [
    "DatasetError",
    "DATASET_FILE",
    "write_dataset",
    "dataset_info",
    "verify_checksum",
    "load_dataset",
    "dataset_device",
    "DatasetWriter",
    "episode_bounds",
    "iter_episodes",
    "new_replay",
]

DATASET_FILE = "dataset.json"
DATASET_FORMAT = "taco-rl-dataset"
DATASET_VERSION = 1
_HASHED = ("frames", "actions", "rewards", "discounts", "ep_start")
_REQUIRED = (
    "format",
    "version",
    "task",
    "frame_shape",
    "action_dim",
    "episodes",
    "transitions",
    "slots",
    "return",
    "checksum",
    "source",
)
_CHUNK_BYTES = 1 << 20  # bytes hashed at a time
_ITEM_BYTES = {"frames": 1, "actions": 4, "rewards": 4, "discounts": 4, "ep_start": 8}  # bytes per element
VERIFIED_FILE = ".verified.json"  # the verified state of the arrays (see record_verified)
_PARTIAL_LOCK = ".writer.lock"  # held by the process writing a partial folder


class DatasetError(ValueError):
    """A dataset (or a file being imported) is missing, corrupt or not what was expected."""


# ------------------------------------------------------------------------------------------------
# canonical layout
# ------------------------------------------------------------------------------------------------
def new_replay(slots: int, frame_shape: tuple[int, ...], action_dim: int) -> Replay:
    """An empty CPU replay of exactly ``slots`` slots (reset frames included), for building datasets."""
    if slots < 2:
        raise DatasetError(f"a dataset needs at least one transition (2 slots), got {slots} slots")
    return Replay(slots, tuple(frame_shape), action_dim, frame_stack=1, nstep=1, gamma=0.99, seq_len=0, device="cpu")


def _held(replay: Replay) -> tuple[int, int]:
    """(lo, next): the global indices of the slots the ring still holds."""
    nxt = replay.total_added
    return max(0, nxt - replay.capacity), nxt


def _tensor(replay: Replay, key: str) -> torch.Tensor:
    return replay._slot_tensors()[key]  # noqa: SLF001 - the dataset layer reads the replay's own storage


def episode_bounds(replay: Replay) -> list[tuple[int, int]]:
    """Chronological ``(first, stop)`` global slot ranges of the complete-from-reset episodes held.

    An episode whose reset slot was already overwritten by the ring is left out.
    """
    lo, nxt = _held(replay)
    if nxt == 0:
        return []
    c = replay.capacity
    g = torch.arange(lo, nxt, dtype=torch.int64)
    ep = _tensor(replay, "ep_start").index_select(0, (g % c).to(replay.device)).cpu()
    starts = torch.unique_consecutive(ep).tolist()
    bounds = []
    for i, s in enumerate(starts):
        stop = starts[i + 1] if i + 1 < len(starts) else nxt
        if s >= lo:
            bounds.append((int(s), int(stop)))
    return bounds


def _rows(replay: Replay, start: int, stop: int, key: str) -> torch.Tensor:
    """Rows of global slots ``start .. stop-1`` of one stored tensor, on the CPU."""
    c = replay.capacity
    idx = torch.arange(start, stop, dtype=torch.int64) % c
    t = _tensor(replay, key)
    if bool((idx[1:] > idx[:-1]).all()) and t.device.type == "cpu":
        return t[int(idx[0]) : int(idx[-1]) + 1] if len(idx) else t[:0]
    return t.index_select(0, idx.to(t.device)).cpu()


def _file_rows(storage: Path, replay: Replay, start: int, stop: int, key: str) -> torch.Tensor:
    """Like :func:`_rows`, read from the files in ``storage`` with plain reads: what the replay maps
    from them is never touched, so nothing of it stays resident in this process."""
    t, c = _tensor(replay, key), replay.capacity
    out = torch.empty((stop - start, *t.shape[1:]), dtype=t.dtype)
    buf, row = out.numpy().data.cast("B"), _row_bytes(t)
    with open(storage / f"{key}.memmap", "rb", buffering=0) as fh:
        done, g = 0, start
        while g < stop:  # at most two pieces: up to the end of the ring, then from its start
            r, n = g % c, min(stop - g, c - g % c)
            fh.seek(r * row)
            _read_exactly(fh, buf[done * row : (done + n) * row])
            done, g = done + n, g + n
    return out


def _read_exactly(fh: Any, buf: memoryview) -> None:
    """Fill ``buf`` from the raw file ``fh`` (a short file is a truncated dataset)."""
    pos = 0
    while pos < len(buf):
        got = fh.readinto(buf[pos:])
        if not got:
            raise DatasetError(f"{fh.name}: truncated ({len(buf) - pos} bytes missing)")
        pos += got


def iter_episodes(replay: Replay, files: str | os.PathLike | None = None) -> Iterator[tuple[torch.Tensor, ...]]:
    """Each held episode as ``(frames (T+1,C,H,W), actions (T,A), rewards (T,), discounts (T,))``.

    ``files``: the folder ``replay`` was loaded from (and not added to since); the rows are then read
    from its files one episode at a time instead of through the replay's memory map.
    """
    if files is None:
        rows = functools.partial(_rows, replay)
    else:
        rows = functools.partial(_file_rows, _storage_dir(files), replay)
    for s, e in episode_bounds(replay):
        yield (rows(s, e, "frames"), rows(s + 1, e, "actions"), rows(s + 1, e, "rewards"), rows(s + 1, e, "discounts"))


def _storage_dir(folder: str | os.PathLike) -> Path:
    """The array folder of the saved replay in ``folder`` (which ``Replay.load`` has validated)."""
    return Path(folder) / json.loads((Path(folder) / "meta.json").read_text())["storage"]


def _row_bytes(t: torch.Tensor) -> int:
    return t[0].numel() * t.element_size()


# ------------------------------------------------------------------------------------------------
# write (streaming)
# ------------------------------------------------------------------------------------------------
def _write_json(path: Path, data: dict[str, Any]) -> None:
    with open(path, "w") as fh:
        json.dump(data, fh, indent=1)
        fh.flush()
        os.fsync(fh.fileno())


def partial_dir(path: Path) -> Path:
    """A fresh hidden temporary folder beside ``path`` (same file system, so a rename publishes it)."""
    return path.parent / f".{path.name}.partial-{uuid.uuid4().hex[:8]}"


def _lock_partial(folder: Path) -> int | None:
    """Hold ``folder``'s writer lock (a descriptor; closing it releases), or None if another process
    holds it or the folder is gone."""
    try:
        fd, held = try_flock(folder / _PARTIAL_LOCK)
    except OSError:
        return None
    if not held:
        os.close(fd)
        return None
    return fd


def _tree_bytes(folder: Path) -> int:
    total = 0
    for root, _, files in os.walk(folder):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.stat(os.path.join(root, f)).st_blocks * 512
    return total


def remove_stale_partials(path: Path) -> list[Path]:
    """Delete the hidden ``.NAME.partial-*`` folders beside ``path`` that no live writer holds (left by
    a killed or failed write of the same ``out=``), saying so on stderr; returns them."""
    removed = []
    for folder in sorted(path.parent.glob(f".{path.name}.partial-*")):
        if not folder.is_dir() or folder.is_symlink():
            continue
        fd = _lock_partial(folder)
        if fd is None:  # a write in progress in another process
            continue
        try:
            size = _tree_bytes(folder)
            shutil.rmtree(folder, ignore_errors=True)
        finally:
            os.close(fd)
        removed.append(folder)
        print(
            f"removed {folder} ({size / 1e6:.1f} MB), left by an interrupted write of {path}",
            file=sys.stderr,
            flush=True,
        )
    return removed


def _disk_error(path: Path, e: OSError) -> DatasetError:
    """The one-line error of a write the disk refused (the partial folder is removed by the caller)."""
    why = "the disk is full" if e.errno == errno.ENOSPC else (e.strerror or str(e))
    return DatasetError(
        f"cannot write dataset {path} ({why}); nothing was left behind: free space or choose another out= and rerun"
    )


def check_destination(path: str | os.PathLike, overwrite: bool = False) -> Path:
    """The resolved destination; refuses an existing non-empty folder or a file unless ``overwrite``."""
    path = Path(path).expanduser().resolve()
    if path.exists() and not overwrite and (not path.is_dir() or any(path.iterdir())):
        raise DatasetError(f"{path} already exists; choose another out= or delete it first")
    return path


def _episode_rows(frame_shape: tuple[int, ...], action_dim: int, episode: Any) -> dict[str, torch.Tensor]:
    """One episode laid out as the replay stores it (placeholders in the reset slot, ``ep_start`` 0),
    by the replay's own ``add_episode`` (which also checks shapes and dtypes)."""
    n = len(episode[0])
    rb = Replay(max(2, n), frame_shape, action_dim, frame_stack=1, nstep=1, gamma=0.99, seq_len=0, device="cpu")
    rb.add_episode(*episode)
    return {k: _tensor(rb, k)[:n] for k in _HASHED}


def _file_checksum(storage: Path, nbytes: dict[str, int]) -> str:
    """sha256 over the first ``nbytes[key]`` bytes of each stored array file, read in fixed chunks."""
    h = hashlib.sha256()
    buf = memoryview(bytearray(_CHUNK_BYTES))
    for key in _HASHED:
        left = nbytes[key]
        with open(storage / f"{key}.memmap", "rb", buffering=0) as fh:
            while left > 0:
                chunk = buf[: min(left, _CHUNK_BYTES)]
                _read_exactly(fh, chunk)
                h.update(chunk)
                left -= len(chunk)
    return "sha256:" + h.hexdigest()


class DatasetWriter:
    """Writes a dataset of exactly ``slots`` slots episode by episode, straight into its files.

    The arrays are created at their final size (sparse files, in the replay's storage layout) in a
    hidden folder beside ``path``; :meth:`add_episode` writes each episode's rows at their offset, so
    memory holds about one episode whatever the dataset's size. :meth:`finish` hashes the files in
    chunks, writes ``meta.json`` and ``dataset.json`` and renames the folder into place. Use it as a
    context manager: leaving the block by an exception (or without ``finish``) deletes the folder,
    so an interrupted write never leaves anything at ``path``.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        slots: int,
        frame_shape: tuple[int, ...],
        action_dim: int,
        *,
        overwrite: bool = False,
    ) -> None:
        if slots < 2:
            raise DatasetError(f"a dataset needs at least one transition (2 slots), got {slots} slots")
        self.path = check_destination(path, overwrite)
        self.slots, self.frame_shape, self.action_dim = int(slots), tuple(int(s) for s in frame_shape), int(action_dim)
        self.next, self.last_start = 0, -1
        self.lengths: list[int] = []
        self.returns: list[float] = []
        self.save_id = uuid.uuid4().hex
        self.tmp = partial_dir(self.path)
        self.storage = self.tmp / f"storage-{self.save_id}"
        self._files: dict[str, Any] = {}
        self._lock: int | None = None
        probe = _episode_rows(self.frame_shape, self.action_dim, _reset_only(self.frame_shape, self.action_dim))
        self.row_bytes = {k: _row_bytes(t) for k, t in probe.items()}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            remove_stale_partials(self.path)
            # the files are sparse until filled: a full disk would surface mid-write (or, mapped, as a crash)
            need, free = self.slots * sum(self.row_bytes.values()) + 2**20, free_bytes(self.path.parent)
            if free < need:
                raise DatasetError(
                    f"cannot write dataset {self.path}: it needs about {need / 1e9:.2f} GB, "
                    f"{free / 1e9:.2f} GB is free on that disk; free space or choose another out="
                )
            self.tmp.mkdir()
            self._lock = _lock_partial(self.tmp)
            # zero-stride stand-ins: memmap_like creates the files at full size without copying anything
            shapes = {k: torch.zeros((), dtype=t.dtype).expand(self.slots, *t.shape[1:]) for k, t in probe.items()}
            TensorDict(shapes, batch_size=[self.slots]).memmap_like(self.storage)  # mappings dropped at once
            self._files = {  # open until finish() or abort(): episodes are written through them one by one
                k: open(self.storage / f"{k}.memmap", "r+b", buffering=0)  # noqa: SIM115
                for k in _HASHED
            }
        except OSError as e:
            self.abort()
            raise _disk_error(self.path, e) from None
        except BaseException:
            self.abort()
            raise

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.abort()  # after finish() there is nothing left to remove

    def add_episode(self, frames: Any, actions: Any, rewards: Any, discounts: Any) -> None:
        """Append one episode (the arguments of :meth:`Replay.add_episode`)."""
        rows = _episode_rows(self.frame_shape, self.action_dim, (frames, actions, rewards, discounts))
        n = len(rows["frames"])
        if self.next + n > self.slots:
            raise DatasetError(
                f"got more than the {self.slots} slots counted up front; the input changed while being read"
            )
        rows["ep_start"] = rows["ep_start"] + self.next
        try:
            for key, fh in self._files.items():
                fh.seek(self.next * self.row_bytes[key])
                data = rows[key].contiguous().numpy().data.cast("B")
                while data:  # an unbuffered write may write less than asked
                    data = data[fh.write(data) :]
        except OSError as e:
            self.abort()
            raise _disk_error(self.path, e) from None
        self.lengths.append(n - 1)
        # a sequential float64 sum (index_add_ into one bin), as the statistics have always been computed
        returns = torch.zeros(1, dtype=torch.float64).index_add_(
            0, torch.zeros(n, dtype=torch.int64), rows["rewards"].double()
        )
        self.returns.append(float(returns))
        self.last_start, self.next = self.next, self.next + n

    def finish(self, *, task: str, source: Any) -> dict[str, Any]:
        """Check that every slot was written, hash, describe and publish; returns ``dataset.json``."""
        if self.next != self.slots:
            raise DatasetError(
                f"got {self.next} slots, {self.slots} were counted up front; the input changed while being read"
            )
        try:
            return self._publish(task, source)
        except OSError as e:
            self.abort()
            raise _disk_error(self.path, e) from None

    def _publish(self, task: str, source: Any) -> dict[str, Any]:
        for fh in self._files.values():
            os.fsync(fh.fileno())
            fh.close()
        returns = torch.tensor(self.returns, dtype=torch.float64)
        info = {
            "format": DATASET_FORMAT,
            "version": DATASET_VERSION,
            "task": str(task),
            "frame_shape": list(self.frame_shape),
            "action_dim": self.action_dim,
            "episodes": len(self.lengths),
            "transitions": self.slots - len(self.lengths),
            "slots": self.slots,
            "episode_length": {"min": min(self.lengths), "max": max(self.lengths)},
            "return": {"min": float(returns.min()), "mean": float(returns.mean()), "max": float(returns.max())},
            "checksum": _file_checksum(self.storage, {k: self.slots * b for k, b in self.row_bytes.items()}),
            "source": source,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        _write_replay_meta(
            self.tmp, self.storage.name, self.save_id, self.slots, self.last_start, self.frame_shape, self.action_dim
        )
        _write_json(self.tmp / DATASET_FILE, info)
        if self.path.exists():
            old = partial_dir(self.path)
            os.replace(self.path, old)
            os.replace(self.tmp, self.path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(self.tmp, self.path)
        self._unlock(self.path)
        record_verified({**info, "path": str(self.path)})  # the files were hashed just now
        return info

    def _unlock(self, folder: Path) -> None:
        if self._lock is not None:
            (folder / _PARTIAL_LOCK).unlink(missing_ok=True)
            os.close(self._lock)
            self._lock = None

    def abort(self) -> None:
        """Close and delete the unfinished folder (nothing happens after :meth:`finish`)."""
        for fh in self._files.values():
            with contextlib.suppress(OSError):  # nothing buffered is worth keeping: the folder goes
                fh.close()
        shutil.rmtree(self.tmp, ignore_errors=True)
        self._unlock(self.tmp)


def free_bytes(folder: Path) -> int:
    """Free bytes on ``folder``'s file system (a function of its own, so tests can fill the disk)."""
    return shutil.disk_usage(folder).free


def _reset_only(frame_shape: tuple[int, ...], action_dim: int) -> tuple[np.ndarray, ...]:
    """A reset-only episode: enough for the replay to show the dtype and row shape of every array."""
    z = np.zeros
    return z((1, *frame_shape), np.uint8), z((0, action_dim), np.float32), z(0, np.float32), z(0, np.float32)


def _write_replay_meta(
    folder: Path, storage: str, save_id: str, slots: int, last_start: int, frame_shape: tuple[int, ...], action_dim: int
) -> None:
    """The replay's ``meta.json`` for full storage of ``slots`` slots (what ``Replay.save`` writes)."""
    shell = Replay.__new__(Replay)
    shell._configure(slots, frame_shape, action_dim, 1, 1, 0.99, 0, "cpu")  # noqa: SLF001 - no storage
    shell._next, shell._episode_start = slots, last_start  # noqa: SLF001
    Replay._write_meta(folder, shell._meta(storage, save_id, True))  # noqa: SLF001


def write_dataset(
    replay: Replay,
    path: str | os.PathLike,
    *,
    task: str,
    source: Any,
    overwrite: bool = False,
    files: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Store ``replay``'s held episodes as a dataset at ``path``; returns the ``dataset.json`` dict.

    Streams through :class:`DatasetWriter` (atomic; memory holds about one episode beyond the
    replay itself; with ``files``, the folder the replay was loaded from, not even the replay's
    frames: see :func:`iter_episodes`). Episodes whose reset slot the ring already overwrote are
    left out.
    """
    path = check_destination(path, overwrite)
    slots = sum(e - s for s, e in episode_bounds(replay))
    if slots == 0:
        raise DatasetError("the replay holds no complete episode; nothing to write")
    with DatasetWriter(path, slots, replay.frame_shape, replay.action_dim, overwrite=overwrite) as out:
        for ep in iter_episodes(replay, files):
            out.add_episode(*ep)
        return out.finish(task=task, source=source)


# ------------------------------------------------------------------------------------------------
# read
# ------------------------------------------------------------------------------------------------
def dataset_info(path: str | os.PathLike) -> dict[str, Any]:
    """The ``dataset.json`` of dataset ``path`` (validated; ``path`` added)."""
    path = Path(path).expanduser().resolve()
    if not path.is_dir():
        what = "a file, not a dataset directory" if path.exists() else "no such dataset directory"
        raise DatasetError(f"{path}: {what}")
    file = path / DATASET_FILE
    if not file.is_file():
        raise DatasetError(f"{file}: missing; {path} is not a dataset (make one with `taco data ...`)")
    try:
        info = json.loads(file.read_text())
    except (OSError, ValueError) as e:
        raise DatasetError(f"{file}: corrupt or unreadable ({e})") from None
    if not isinstance(info, dict) or info.get("format") != DATASET_FORMAT:
        raise DatasetError(f"{file}: not a {DATASET_FORMAT} file")
    if info.get("version") != DATASET_VERSION:
        raise DatasetError(f"{file}: version {info.get('version')!r}, this code reads {DATASET_VERSION}")
    missing = [k for k in _REQUIRED if k not in info]
    if missing:
        raise DatasetError(f"{file}: missing fields {missing}")
    info = {**info, "path": str(path)}
    check_file_sizes(info)
    return info


def _array_files(info: dict[str, Any]) -> dict[str, Path]:
    """The array file of each hashed key of dataset ``info`` (the storage folder named by meta.json)."""
    meta = Path(info["path"]) / "meta.json"
    try:
        name = json.loads(meta.read_text()).get("storage")
    except FileNotFoundError:
        raise DatasetError(f"{meta}: missing; {info['path']} is not a complete dataset") from None
    except (OSError, ValueError, AttributeError) as e:
        raise DatasetError(f"{meta}: corrupt or unreadable ({e})") from None
    if not (isinstance(name, str) and name.startswith("storage-") and Path(name).name == name):
        raise DatasetError(f"{meta}: invalid storage name {name!r}")
    return {k: Path(info["path"]) / name / f"{k}.memmap" for k in _HASHED}


def expected_file_sizes(info: dict[str, Any]) -> dict[str, int]:
    """Bytes each array file of dataset ``info`` holds: ``slots`` rows of the shapes dataset.json gives."""
    try:
        slots, frame, adim = int(info["slots"]), int(np.prod(info["frame_shape"])), int(info["action_dim"])
    except (TypeError, ValueError):
        raise DatasetError(
            f"{Path(info['path']) / DATASET_FILE}: slots, frame_shape or action_dim is not a number"
        ) from None
    per_row = {"frames": frame, "actions": adim, "rewards": 1, "discounts": 1, "ep_start": 1}
    return {k: slots * n * _ITEM_BYTES[k] for k, n in per_row.items()}


def check_file_sizes(info: dict[str, Any]) -> None:
    """Refuse a dataset whose array files are missing or not the size dataset.json implies (a cheap
    check, done on every open: it catches truncated or partly copied datasets, not changed bytes)."""
    files, want = _array_files(info), expected_file_sizes(info)
    for key, file in files.items():
        try:
            size = file.stat().st_size
        except OSError:
            raise DatasetError(f"{file}: missing; the dataset is incomplete (re-create or re-import it)") from None
        if size != want[key]:
            raise DatasetError(
                f"{file}: {size} bytes, dataset.json's slots and shapes need {want[key]}: the dataset "
                "is inconsistent (a truncated or damaged file); re-create or re-import it"
            )


# ------------------------------------------------------------------------------------------------
# verified state: the checksum is computed once per version of the files, not on every open
# ------------------------------------------------------------------------------------------------
def _stamps(info: dict[str, Any]) -> dict[str, list[int]]:
    """Per array file: size, mtime, ctime (which no user can set back), inode and device."""
    out = {}
    for key, file in _array_files(info).items():
        st = file.stat()
        out[key] = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev]
    return out


def _record_paths(info: dict[str, Any]) -> list[Path]:
    """Where the verified state is kept: in the dataset folder, else (read-only folder) the user cache."""
    key = hashlib.sha256(str(info["path"]).encode()).hexdigest()[:24]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "taco-rl" / "verified"
    return [Path(info["path"]) / VERIFIED_FILE, cache / f"{key}.json"]


def is_verified(info: dict[str, Any]) -> bool:
    """Whether the arrays were hashed against ``info["checksum"]`` and have not changed since (same
    sizes, times, inodes). A copy, a rewrite or a ``touch`` of any array file makes this False."""
    want = {"checksum": info["checksum"], "files": _stamps(info)}
    for file in _record_paths(info):
        try:
            got = json.loads(file.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(got, dict) and {k: got.get(k) for k in want} == want:
            return True
    return False


def record_verified(info: dict[str, Any]) -> None:
    """Note that the arrays, as they are now, match ``info["checksum"]`` (best effort: a folder and a
    cache nobody may write to mean the next open hashes again)."""
    data = json.dumps(
        {
            "checksum": info["checksum"],
            "files": _stamps(info),
            "path": info["path"],
            "verified": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
    )
    for file in _record_paths(info):
        try:
            file.parent.mkdir(parents=True, exist_ok=True)
            tmp = file.with_name(f"{file.name}.{uuid.uuid4().hex[:8]}.tmp")
            tmp.write_text(data)
            os.replace(tmp, file)
            return
        except OSError:
            continue


def _open(path: Path, device: str | torch.device, **settings: Any) -> Replay:
    try:
        return Replay.load(path, device, **settings)
    except ReplayFormatError as e:
        raise DatasetError(str(e)) from None


def _check_matches(replay: Replay, info: dict[str, Any]) -> None:
    file = Path(info["path"]) / DATASET_FILE
    got = (list(replay.frame_shape), replay.action_dim, len(replay), replay.total_added)
    want = (list(info["frame_shape"]), info["action_dim"], info["slots"], info["slots"])
    if got != want:
        raise DatasetError(
            f"{file}: says frame_shape/action_dim/slots {want[:3]}, the stored replay holds "
            f"{got[:3]} (total added {got[3]}); the dataset is inconsistent"
        )


def verify_checksum(path: str | os.PathLike) -> str:
    """Recompute the checksum of dataset ``path``; raises DatasetError unless it matches dataset.json.
    A match is recorded (see :func:`is_verified`), so that loading skips the hash until the files change."""
    info = dataset_info(path)
    replay = _open(Path(info["path"]), "cpu")
    _check_matches(replay, info)
    digest = _file_checksum(
        _storage_dir(info["path"]), {k: len(replay) * _row_bytes(_tensor(replay, k)) for k in _HASHED}
    )
    if digest != info["checksum"]:
        raise DatasetError(
            f"{info['path']}: checksum mismatch (stored {info['checksum']}, computed {digest}); "
            "the arrays were modified or damaged: re-create or re-import the dataset"
        )
    record_verified(info)
    return digest


def load_dataset(
    path: str | os.PathLike,
    *,
    device: str | torch.device = "cpu",
    frame_stack: int = 3,
    nstep: int = 3,
    gamma: float = 0.99,
    seq_len: int = 0,
) -> tuple[Replay, dict[str, Any]]:
    """Open dataset ``path`` for sampling with the learner's settings; returns ``(replay, info)``.

    The array files must have the sizes dataset.json implies, and their checksum must match: it is
    computed on the first open (one sequential read of the files) and recorded with the files'
    sizes, times and inodes, so later opens of unchanged files skip it (:func:`is_verified`).
    On the CPU the files are mapped copy-on-write (nothing is read until sampled, nothing is ever
    written back); on a GPU they are copied there (see :func:`dataset_device`). The replay never
    saves into ``path``.
    """
    info = dataset_info(path)
    if not is_verified(info):
        gb = sum(expected_file_sizes(info).values()) / 1e9
        print(
            f"verifying the checksum of {info['path']} ({gb:.2f} GB; once, until its files change)",
            file=sys.stderr,
            flush=True,
        )
        verify_checksum(info["path"])
    replay = _open(Path(info["path"]), device, frame_stack=frame_stack, nstep=nstep, gamma=gamma, seq_len=seq_len)
    _check_matches(replay, info)
    replay._saved = {}  # noqa: SLF001 - never an incremental save into the dataset folder
    if replay.num_sampleable == 0:
        raise DatasetError(
            f"{info['path']}: no episode has max(nstep, seq_len)={replay.horizon} steps "
            f"(longest: {info.get('episode_length', {}).get('max', '?')} transitions)"
        )
    return replay, info


def dataset_bytes(info: dict[str, Any]) -> int:
    """Bytes the dataset's arrays take in memory (what a copy to a GPU allocates)."""
    frame = int(np.prod(info["frame_shape"]))
    return int(info["slots"]) * (frame + 4 * int(info["action_dim"]) + 4 + 4 + 8 + 1)


def dataset_device(path: str | os.PathLike, learner_device: str | torch.device) -> tuple[torch.device, str]:
    """Where to sample dataset ``path`` from: the learner's GPU when the arrays take under half of its
    free memory, else the CPU (memory-mapped). Returns ``(device, reason)``."""
    info = dataset_info(path)
    device = torch.device(learner_device)
    need = dataset_bytes(info)
    gb = need / 1e9
    if device.type != "cuda":
        return torch.device("cpu"), f"learner on {device}: dataset memory-mapped on the CPU ({gb:.2f} GB)"
    free, _ = torch.cuda.mem_get_info(device)
    if need < free // 2:
        return device, f"dataset copied to {device} ({gb:.2f} GB of {free / 1e9:.1f} GB free)"
    return torch.device("cpu"), (
        f"dataset ({gb:.2f} GB) exceeds half of {device}'s free memory ({free / 1e9:.1f} GB): memory-mapped on the CPU"
    )
