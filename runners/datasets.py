"""Offline datasets: a saved frame-once :class:`Replay` directory plus ``dataset.json``.

A dataset directory is exactly what ``Replay.save`` writes (``meta.json`` + ``storage-<id>/``
memory-mapped tensors) in *canonical* form: the held slots in chronological order, rows
``0 .. slots-1``, no ring wrap, capacity equal to the slots held (so nothing is reserved that is not
data, and the files are not sparse). ``dataset.json`` beside it says what it holds: task, frame
shape, action dim, episode and transition counts, return statistics, a sha256 checksum of the held
arrays and a free-form ``source``.

Learners never see file formats: importers (``runners/formats/``) and ``taco data`` build a
:class:`Replay`, :func:`write_dataset` stores it, :func:`load_dataset` opens it read-only with the
learner's own frame stack, n-step, gamma and K (stacks and returns are built at sample time).

A dataset is written into a hidden temporary folder beside its destination and renamed into place
once ``dataset.json`` is written, so an interrupted write never looks like a complete dataset.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from .replay import Replay, ReplayFormatError

__all__ = [
    "DatasetError", "DATASET_FILE", "write_dataset", "dataset_info", "verify_checksum", "load_dataset",
    "dataset_device", "compute_checksum", "describe", "canonical", "episode_bounds", "new_replay",
]

DATASET_FILE = "dataset.json"
DATASET_FORMAT = "taco-rl-dataset"
DATASET_VERSION = 1
_HASHED = ("frames", "actions", "rewards", "discounts", "ep_start")
_REQUIRED = ("format", "version", "task", "frame_shape", "action_dim", "episodes", "transitions", "slots",
             "return", "checksum", "source")
_CHUNK = 4096  # rows hashed / copied at a time (84px: ~87 MB of frames)


class DatasetError(ValueError):
    """A dataset (or a file being imported) is missing, corrupt or not what was expected."""


# ------------------------------------------------------------------------------------------------
# canonical layout
# ------------------------------------------------------------------------------------------------
def new_replay(slots: int, frame_shape: tuple[int, ...], action_dim: int) -> Replay:
    """An empty CPU replay of exactly ``slots`` slots (reset frames included), for building datasets."""
    if slots < 2:
        raise DatasetError(f"a dataset needs at least one transition (2 slots), got {slots} slots")
    return Replay(slots, tuple(frame_shape), action_dim, frame_stack=1, nstep=1, gamma=0.99, seq_len=0,
                  device="cpu")


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


def iter_episodes(replay: Replay) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Each held episode as ``(frames (T+1,C,H,W), actions (T,A), rewards (T,), discounts (T,))``."""
    for s, e in episode_bounds(replay):
        yield (_rows(replay, s, e, "frames"), _rows(replay, s + 1, e, "actions"),
               _rows(replay, s + 1, e, "rewards"), _rows(replay, s + 1, e, "discounts"))


def _is_canonical(replay: Replay) -> bool:
    lo, nxt = _held(replay)
    bounds = episode_bounds(replay)
    return (replay.device.type == "cpu" and lo == 0 and nxt == replay.capacity and bool(bounds)
            and bounds[0][0] == 0)


def canonical(replay: Replay) -> Replay:
    """``replay`` itself when canonical, else a compact CPU copy of its complete-from-reset episodes."""
    if _is_canonical(replay):
        return replay
    bounds = episode_bounds(replay)
    slots = sum(e - s for s, e in bounds)
    out = new_replay(slots, replay.frame_shape, replay.action_dim)
    for ep in iter_episodes(replay):
        out.add_episode(*ep)
    return out


# ------------------------------------------------------------------------------------------------
# statistics and checksum
# ------------------------------------------------------------------------------------------------
def compute_checksum(replay: Replay) -> str:
    """sha256 over the held slots of a canonical replay: frames, actions, rewards, discounts, ep_start."""
    n = len(replay)
    h = hashlib.sha256()
    for key in _HASHED:
        t = _tensor(replay, key)
        for a in range(0, n, _CHUNK):
            chunk = t[a : min(n, a + _CHUNK)].cpu().contiguous()
            h.update(chunk.numpy().view(np.uint8).reshape(-1).data)
    return "sha256:" + h.hexdigest()


def describe(replay: Replay) -> dict[str, Any]:
    """Counts, episode lengths and return statistics of a canonical replay."""
    n = len(replay)
    ep_start = _tensor(replay, "ep_start")[:n].cpu()
    first = ep_start == torch.arange(n)
    episodes = int(first.sum())
    ep_id = torch.cumsum(first.long(), 0) - 1
    rewards = _tensor(replay, "rewards")[:n].cpu().double().masked_fill(first, 0.0)
    returns = torch.zeros(episodes, dtype=torch.float64).index_add_(0, ep_id, rewards)
    lengths = torch.bincount(ep_id, minlength=episodes) - 1
    return {
        "episodes": episodes,
        "transitions": n - episodes,
        "slots": n,
        "episode_length": {"min": int(lengths.min()), "max": int(lengths.max())},
        "return": {"min": float(returns.min()), "mean": float(returns.mean()), "max": float(returns.max())},
    }


# ------------------------------------------------------------------------------------------------
# write / read
# ------------------------------------------------------------------------------------------------
def _write_json(path: Path, data: dict[str, Any]) -> None:
    with open(path, "w") as fh:
        json.dump(data, fh, indent=1)
        fh.flush()
        os.fsync(fh.fileno())


def partial_dir(path: Path) -> Path:
    """A fresh hidden temporary folder beside ``path`` (same file system, so a rename publishes it)."""
    return path.parent / f".{path.name}.partial-{uuid.uuid4().hex[:8]}"


def check_destination(path: str | os.PathLike, overwrite: bool = False) -> Path:
    """The resolved destination; refuses an existing non-empty folder or a file unless ``overwrite``."""
    path = Path(path).expanduser().resolve()
    if path.exists() and not overwrite and (not path.is_dir() or any(path.iterdir())):
        raise DatasetError(f"{path} already exists; choose another out= or delete it first")
    return path


def write_dataset(replay: Replay, path: str | os.PathLike, *, task: str, source: Any,
                  overwrite: bool = False) -> dict[str, Any]:
    """Store ``replay``'s held episodes as a dataset at ``path``; returns the ``dataset.json`` dict.

    Atomic: everything is written into a hidden folder beside ``path`` and renamed into place after
    ``dataset.json``; an interrupted write leaves at most that hidden folder, never ``path``.
    Episodes whose reset slot the ring already overwrote are left out.
    """
    path = check_destination(path, overwrite)
    rb = canonical(replay)
    if len(rb) == 0:
        raise DatasetError("the replay holds no complete episode; nothing to write")
    info = {
        "format": DATASET_FORMAT,
        "version": DATASET_VERSION,
        "task": str(task),
        "frame_shape": list(rb.frame_shape),
        "action_dim": rb.action_dim,
        **describe(rb),
        "checksum": compute_checksum(rb),
        "source": source,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_dir(path)
    try:
        rb.save(tmp)
        _write_json(tmp / DATASET_FILE, info)
        if path.exists():
            old = partial_dir(path)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return info


def dataset_info(path: str | os.PathLike) -> dict[str, Any]:
    """The ``dataset.json`` of dataset ``path`` (validated; ``path`` added)."""
    path = Path(path).expanduser().resolve()
    if not path.is_dir():
        raise DatasetError(f"{path}: no such dataset directory")
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
    return {**info, "path": str(path)}


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
        raise DatasetError(f"{file}: says frame_shape/action_dim/slots {want[:3]}, the stored replay holds "
                           f"{got[:3]} (total added {got[3]}); the dataset is inconsistent")


def verify_checksum(path: str | os.PathLike) -> str:
    """Recompute the checksum of dataset ``path``; raises DatasetError unless it matches dataset.json."""
    info = dataset_info(path)
    replay = _open(Path(info["path"]), "cpu")
    _check_matches(replay, info)
    digest = compute_checksum(replay)
    if digest != info["checksum"]:
        raise DatasetError(f"{info['path']}: checksum mismatch (stored {info['checksum']}, computed {digest}); "
                           "the arrays were modified or damaged")
    return digest


def load_dataset(path: str | os.PathLike, *, device: str | torch.device = "cpu", frame_stack: int = 3,
                 nstep: int = 3, gamma: float = 0.99, seq_len: int = 0) -> tuple[Replay, dict[str, Any]]:
    """Open dataset ``path`` for sampling with the learner's settings; returns ``(replay, info)``.

    On the CPU the files are mapped copy-on-write (nothing is read until sampled, nothing is ever
    written back); on a GPU they are copied there (see :func:`dataset_device`). The replay never
    saves into ``path``.
    """
    info = dataset_info(path)
    replay = _open(Path(info["path"]), device, frame_stack=frame_stack, nstep=nstep, gamma=gamma,
                   seq_len=seq_len)
    _check_matches(replay, info)
    replay._saved = {}  # noqa: SLF001 - never an incremental save into the dataset folder
    if replay.num_sampleable == 0:
        raise DatasetError(f"{info['path']}: no episode has max(nstep, seq_len)={replay.horizon} steps "
                           f"(longest: {info.get('episode_length', {}).get('max', '?')} transitions)")
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
    return torch.device("cpu"), (f"dataset ({gb:.2f} GB) exceeds half of {device}'s free memory "
                                 f"({free / 1e9:.1f} GB): memory-mapped on the CPU")
