"""What every format reader shares: the scan result, the import loop and the input checks."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from taco_rl.runners.data.datasets import DatasetError, DatasetWriter

# One episode as the replay stores it: frames (T+1, 3, H, W) uint8 starting with the reset frame,
# actions (T, A) float32, rewards (T,) float32, discounts (T,) float32 (0 only at a true terminal).
Episode = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


@dataclass
class Plan:
    """A scanned import: sizes known up front, episodes read on demand by ``read()``."""

    slots: int
    episodes: int
    frame_shape: tuple[int, int, int]
    action_dim: int
    read: Callable[[], Iterator[Episode]]
    source: dict[str, Any] = field(default_factory=dict)
    task: str | None = None  # the task the files record (a Minari env spec), if they do


def build(
    plan: Plan, out: str | os.PathLike, *, task: str, overwrite: bool = False, progress: bool = False
) -> dict[str, Any]:
    """Stream ``plan``'s episodes into a dataset of exactly ``plan.slots`` slots at ``out``."""
    with DatasetWriter(out, plan.slots, plan.frame_shape, plan.action_dim, overwrite=overwrite) as writer:
        bar = _bar(plan.episodes, progress)
        for frames, actions, rewards, discounts in plan.read():
            writer.add_episode(frames, actions, rewards, discounts)
            bar.update(1)
        bar.close()
        return writer.finish(task=task, source=plan.source)


def _bar(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="episode", disable=not enabled, dynamic_ncols=True, mininterval=1.0)


def scan_files(
    path: str | os.PathLike,
    suffix: str,
    fmt: str,
    keys: tuple[str, str],
    scan_file: Callable[[Path], tuple[tuple[int, int, int], int, list[tuple[int, int]]]],
    read_file: Callable[[Path, list[tuple[int, int]]], Iterator[Episode]],
) -> Plan:
    """Scan every ``*suffix`` file below ``path`` with ``scan_file(file) -> (frame shape, action dim,
    episode record ranges)``; episodes without a transition are dropped; ``read_file(file, ranges)``
    yields the episodes later. ``keys`` (frames key, action key) name the keys in mismatch errors."""
    files = list_files(path, suffix)
    per_file: list[tuple[Path, list[tuple[int, int]]]] = []
    fshape = action_dim = None
    slots = episodes = dropped = 0
    for file in files:
        fs, a_dim, eps = scan_file(file)
        check_same("frame shape", fs, fshape, file, keys[0])
        check_same("action dim", a_dim, action_dim, file, keys[1])
        fshape, action_dim = fs, a_dim
        kept = [(s, e) for s, e in eps if e - s >= 2]
        dropped += len(eps) - len(kept)
        per_file.append((file, kept))
        slots += sum(e - s for s, e in kept)
        episodes += len(kept)
    if episodes == 0 or fshape is None or action_dim is None:  # (every file scanned sets both)
        raise DatasetError(f"{path}: no episode with at least one transition in {len(files)} file(s)")

    def read() -> Iterator[Episode]:
        for file, eps in per_file:
            if eps:
                yield from read_file(file, eps)

    source = {
        "format": fmt,
        "path": str(Path(path).expanduser().resolve()),
        "files": len(files),
        "dropped_empty_episodes": dropped,
    }
    return Plan(slots, episodes, fshape, action_dim, read, source)


def action_dim_of(shape: tuple[int, ...], dtype: np.dtype, file: Path, key: str, n: int, frames_key: str) -> int:
    """Check the header of per-record actions against ``n`` records; returns the action size."""
    if tuple(shape[:1]) != (n,):
        raise DatasetError(f"{file}: key '{key}' has shape {tuple(shape)}, '{frames_key}' has {n} records")
    actions(np.empty((0, *shape[1:]), dtype), file, key, 0)
    return 1 if len(shape) == 1 else int(shape[1])


def list_files(path: str | os.PathLike, suffix: str) -> list[Path]:
    """``path`` itself when it is a ``suffix`` file, else every ``*suffix`` below it (sorted by name)."""
    path = Path(path).expanduser()
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise DatasetError(f"{path}: no such file or folder")
    files = sorted(p for p in path.rglob(f"*{suffix}") if p.is_file())
    if not files:
        raise DatasetError(f"{path}: no {suffix} files found (empty folder?)")
    return files


def frame_shape(
    shape: tuple[int, ...], dtype: np.dtype, file: Path, key: str, layout: str, channels: int | None = 3
) -> tuple[int, int, int]:
    """Check the shape (N, ...) and dtype of stored frames in ``layout`` ('chw' or 'hwc') and return
    the shape of one stored frame, (3, H, W). With ``channels=None`` a channel count that is a
    multiple of 3 is a frame stack (CHW only), of which the newest frame is kept."""
    shape = tuple(int(s) for s in shape)
    if np.dtype(dtype) != np.uint8:
        raise DatasetError(f"{file}: key '{key}' has dtype {dtype}, expected uint8 frames")
    if len(shape) != 4:
        raise DatasetError(f"{file}: key '{key}' has shape {shape}, expected (N, {_shape_hint(layout)})")
    c = shape[1] if layout == "chw" else shape[3]
    ok = c == 3 if channels == 3 else (c >= 3 and c % 3 == 0)
    if not ok:
        want = "3 channels" if channels == 3 else "a multiple of 3 channels (a frame stack)"
        raise DatasetError(
            f"{file}: key '{key}' has shape {shape}, expected {want} in layout (N, {_shape_hint(layout)})"
        )
    return (3, *shape[2:]) if layout == "chw" else (3, *shape[1:3])


def frames_chw(x: np.ndarray, file: Path, key: str, layout: str, channels: int | None = 3) -> np.ndarray:
    """Checked frames (N, ...) as (N, 3, H, W) uint8 (see :func:`frame_shape`)."""
    frame_shape(x.shape, x.dtype, file, key, layout, channels)
    if layout == "hwc":
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    return x[:, -3:] if x.shape[1] != 3 else x


def _shape_hint(layout: str) -> str:
    return "3, H, W" if layout == "chw" else "H, W, 3"


def vector(x: np.ndarray, file: Path, key: str, n: int) -> np.ndarray:
    """A per-record scalar array of length ``n`` as float32 ((n,) or (n, 1) accepted)."""
    if x.ndim == 2 and x.shape[1] == 1:
        x = x[:, 0]
    if x.ndim != 1 or len(x) != n:
        raise DatasetError(f"{file}: key '{key}' has shape {x.shape}, expected ({n},) like the frames")
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
        raise DatasetError(f"{file}: key '{key}' has dtype {x.dtype}, expected numbers")
    return x.astype(np.float32)


def actions(x: np.ndarray, file: Path, key: str, n: int) -> np.ndarray:
    """Per-record actions (n, A) as float32 ((n,) is A = 1)."""
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or len(x) != n:
        raise DatasetError(f"{file}: key '{key}' has shape {x.shape}, expected ({n}, action_dim) like the frames")
    if not np.issubdtype(x.dtype, np.number):
        raise DatasetError(f"{file}: key '{key}' has dtype {x.dtype}, expected numbers")
    return x.astype(np.float32)


def split_firsts(first: np.ndarray, file: Path, key: str) -> list[tuple[int, int]]:
    """Record ranges [s, e) of the episodes of a flat stream whose first records are marked in ``first``."""
    if len(first) == 0:
        raise DatasetError(f"{file}: key '{key}' is empty; the file holds no records")
    if not first[0]:
        raise DatasetError(
            f"{file}: key '{key}': record 0 is not an episode's first record (the file starts mid-episode)"
        )
    starts = np.flatnonzero(first).tolist() + [len(first)]
    return [(s, e) for s, e in zip(starts[:-1], starts[1:], strict=True)]


def check_same(name: str, value: Any, expected: Any, file: Path, key: str) -> None:
    if expected is not None and value != expected:
        raise DatasetError(f"{file}: key '{key}' gives {name} {value}, other files give {expected}")


# ------------------------------------------------------------------------------------------------
# npz files, read without unpickling
# ------------------------------------------------------------------------------------------------
_READ_ERRORS = (OSError, ValueError, EOFError, KeyError, RuntimeError)


class NpzFile:
    """An ``.npz`` archive opened with ``allow_pickle=False``; every failure names the file and key."""

    def __init__(self, file: Path) -> None:
        import zipfile

        self.file = file
        try:
            self.npz = np.load(file, allow_pickle=False)
        except (*_READ_ERRORS, zipfile.BadZipFile) as e:
            raise DatasetError(
                f"{file}: cannot read the npz file, truncated or corrupt ({type(e).__name__}: {e})"
            ) from None
        if not hasattr(self.npz, "files"):
            raise DatasetError(f"{file}: a single .npy array, expected an .npz archive of named arrays")

    def __enter__(self) -> NpzFile:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.npz.close()

    def require(self, *keys: str) -> None:
        missing = [k for k in keys if k not in self.npz.files]
        if missing:
            raise DatasetError(f"{self.file}: missing key '{missing[0]}' (has {sorted(self.npz.files)})")

    def header(self, key: str) -> tuple[tuple[int, ...], np.dtype]:
        """Shape and dtype of ``key`` from its header, without reading (or decompressing) the data."""
        self.require(key)
        try:
            with self.npz.zip.open(f"{key}.npy") as fh:
                version = np.lib.format.read_magic(fh)
                read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                shape, _, dtype = read(fh)
        except Exception as e:  # noqa: BLE001 - zipfile/numpy raise several types; all mean unreadable
            raise DatasetError(f"{self.file}: key '{key}' is unreadable ({type(e).__name__}: {e})") from None
        return tuple(shape), dtype

    def __getitem__(self, key: str) -> np.ndarray:
        import zipfile
        import zlib

        self.require(key)
        try:
            return self.npz[key]
        except (*_READ_ERRORS, zipfile.BadZipFile, zlib.error) as e:
            raise DatasetError(
                f"{self.file}: key '{key}' is unreadable, truncated or corrupt ({type(e).__name__}: {e})"
            ) from None
