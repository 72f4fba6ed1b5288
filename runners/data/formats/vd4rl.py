"""V-D4RL (Lu et al. 2022): 84px HDF5 shards and 64px per-episode npz files (SPEC section 7).

84px: ``*.hdf5`` files, each a flat concatenation of episodes: ``observation`` (N, 3, 84, 84) uint8,
``action`` (N, A), ``reward`` (N,), ``step_type`` (N,) (0 first, 1 mid, 2 last). A record with step
type 0 is an episode's reset: its action and reward are placeholders; transition i of an episode
takes the action and reward of the record after its frame. Every end is a time-limit truncation
(DMC has no terminals), so every discount is 1 and the ``discount`` key is not read.
Files are read in natural name order (2.hdf5 before 10.hdf5). V-D4RL's split_hdf5_shards.py cuts
episodes across files: a file that starts mid-episode continues the episode the previous file leaves
open (no last step at its end); one that follows a last step, or comes first, is refused.

64px: one ``*.npz`` per episode: ``image`` (T+1, 64, 64, 3) uint8 HWC, ``action``, ``reward``,
``is_first``, ``is_terminal`` (record 0 is the reset; a transition's discount is 0 only where
``is_terminal`` is set). The length in the file name is never used.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from taco_rl.runners.data.datasets import DatasetError
from taco_rl.runners.data.formats.common import (
    Episode,
    NpzFile,
    Plan,
    action_dim_of,
    actions,
    check_same,
    frame_shape,
    frames_chw,
    list_files,
    scan_files,
    split_firsts,
    vector,
)

H5_KEYS = ("observation", "action", "reward", "step_type")
NPZ_KEYS = ("image", "action", "reward", "is_first", "is_terminal")


def scan(path: str | os.PathLike) -> Plan:
    """Detect the layout below ``path`` (HDF5 shards or npz episodes) and scan it."""
    p = Path(path).expanduser()
    if p.is_dir():
        has_h5 = any(x.is_file() for x in p.rglob("*.hdf5"))
        has_npz = any(x.is_file() for x in p.rglob("*.npz"))
        if has_h5 and has_npz:
            raise DatasetError(f"{p}: holds both .hdf5 and .npz files; point at the folder of one layout")
        if not has_h5 and not has_npz:
            raise DatasetError(
                f"{p}: no V-D4RL files found (expected *.hdf5 84px shards or *.npz 64px episodes; empty folder?)"
            )
        return scan_hdf5(p) if has_h5 else scan_npz(p)
    if p.suffix == ".hdf5":
        return scan_hdf5(p)
    if p.suffix == ".npz":
        return scan_npz(p)
    raise DatasetError(f"{p}: no such folder, or not a .hdf5/.npz file")


# ------------------------------------------------------------------------------------------------ 84px
def _h5_open(file: Path):
    import h5py

    try:
        return h5py.File(file, "r")
    except OSError as e:
        raise DatasetError(f"{file}: cannot open the HDF5 file, truncated or corrupt ({e})") from None


def _h5_read(h5: Any, file: Path, key: str, sel: Any = ()) -> np.ndarray:
    import h5py

    node = h5.get(key)
    if node is None:
        raise DatasetError(f"{file}: missing key '{key}' (has {sorted(h5.keys())})")
    if not isinstance(node, h5py.Dataset):
        raise DatasetError(f"{file}: key '{key}' is a group, expected an array")
    try:
        return node[sel]
    except (OSError, ValueError, TypeError) as e:
        raise DatasetError(f"{file}: key '{key}' is unreadable, truncated or corrupt ({e})") from None


def _h5_step_types(file: Path, step_type: np.ndarray) -> np.ndarray:
    st = step_type.astype(np.int64)
    if len(st) == 0:
        raise DatasetError(f"{file}: key 'step_type' is empty; the file holds no records")
    bad = np.flatnonzero((st < 0) | (st > 2))
    if len(bad):
        raise DatasetError(f"{file}: key 'step_type' has value {st[bad[0]]} at record {bad[0]}, expected 0, 1 or 2")
    after_last = np.flatnonzero((st[:-1] == 2) & (st[1:] != 0))
    if len(after_last):
        raise DatasetError(
            f"{file}: key 'step_type': record {after_last[0] + 1} follows a last step (2) but is not a first step (0)"
        )
    return st


def _natural(file: Path) -> list[Any]:
    """Sort key that orders numbered shards by number (2.hdf5 before 10.hdf5), as they were written."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(file))]


Segment = tuple[Path, int, int]  # records [s, e) of one file


def _stitch(files: list[tuple[Path, np.ndarray]]) -> list[list[Segment]]:
    """Episodes as lists of file segments, in file order. A file that starts mid-episode (step type
    1 or 2 at record 0) continues the episode the previous file left open (it ends without a last
    step, as V-D4RL's split_hdf5_shards.py cuts them); anything else that starts mid-episode is refused."""
    episodes: list[list[Segment]] = []
    open_ep: list[Segment] | None = None  # the episode the files so far leave unfinished
    prev: Path | None = None
    for file, st in files:
        starts = np.flatnonzero(st == 0).tolist()
        head_end = starts[0] if starts else len(st)
        if head_end > 0:  # the file starts mid-episode
            if prev is None:
                raise DatasetError(
                    f"{file}: key 'step_type': record 0 is not an episode's first record "
                    "(the first file starts mid-episode)"
                )
            if open_ep is None:
                raise DatasetError(
                    f"{file}: key 'step_type': starts mid-episode (step type {st[0]}) but the file "
                    f"before it, {prev}, ends with a last step (2): cannot stitch them"
                )
            open_ep.append((file, 0, head_end))
        elif open_ep is not None:  # the previous file's last episode ended at its file end
            episodes.append(open_ep)
            open_ep = None
        bounds = starts + [len(st)]
        for s, e in zip(bounds[:-1], bounds[1:], strict=True):
            if open_ep is not None:
                episodes.append(open_ep)
            open_ep = [(file, s, e)]
        if st[-1] == 2 and open_ep is not None:
            episodes.append(open_ep)
            open_ep = None
        prev = file
    if open_ep is not None:
        episodes.append(open_ep)
    return episodes


def scan_hdf5(path: Path) -> Plan:
    files = sorted(list_files(path, ".hdf5"), key=_natural)
    fshape = action_dim = None
    scanned: list[tuple[Path, np.ndarray]] = []
    for file in files:
        with _h5_open(file) as h5:
            for k in H5_KEYS:
                _h5_read(h5, file, k, sel=slice(0, 0))  # present and an array
            obs, act = h5["observation"], h5["action"]
            fs = frame_shape(obs.shape, obs.dtype, file, "observation", "chw")
            n = obs.shape[0]
            a_dim = action_dim_of(act.shape, act.dtype, file, "action", n, "observation")
            for k in ("reward", "step_type"):
                if h5[k].shape[:1] != (n,):
                    raise DatasetError(f"{file}: key '{k}' has shape {h5[k].shape}, 'observation' has {n} records")
            check_same("frame shape", fs, fshape, file, "observation")
            check_same("action dim", a_dim, action_dim, file, "action")
            fshape, action_dim = fs, a_dim
            scanned.append((file, _h5_step_types(file, _h5_read(h5, file, "step_type"))))
    episodes = _stitch(scanned)
    kept = [ep for ep in episodes if sum(e - s for _, s, e in ep) >= 2]
    if not kept or fshape is None or action_dim is None:  # (every file read sets both)
        raise DatasetError(f"{path}: no episode with at least one transition in {len(files)} file(s)")

    def read() -> Iterator[Episode]:
        h5, at = None, None  # one open file at a time: consecutive episodes mostly share it
        try:
            for ep in kept:
                parts = []
                for file, s, e in ep:
                    if file != at:
                        if h5 is not None:
                            h5.close()
                        h5, at = _h5_open(file), file
                    parts.append(
                        (
                            frames_chw(_h5_read(h5, file, "observation", np.s_[s:e]), file, "observation", "chw"),
                            actions(_h5_read(h5, file, "action", np.s_[s:e]), file, "action", e - s),
                            vector(_h5_read(h5, file, "reward", np.s_[s:e]), file, "reward", e - s),
                        )
                    )
                frames, act, rew = (np.concatenate([p[i] for p in parts]) for i in range(3))
                yield frames, act[1:], rew[1:], np.ones(len(frames) - 1, np.float32)
        finally:
            if h5 is not None:
                h5.close()

    source = {
        "format": "vd4rl-hdf5",
        "path": str(Path(path).expanduser().resolve()),
        "files": len(files),
        "dropped_empty_episodes": len(episodes) - len(kept),
        "stitched_episodes": sum(len(ep) > 1 for ep in kept),
    }
    return Plan(
        sum(sum(e - s for _, s, e in ep) for ep in kept),
        len(kept),
        fshape,
        action_dim,
        read,
        source,
    )


# ------------------------------------------------------------------------------------------------ 64px
def scan_npz(path: Path) -> Plan:
    def scan_file(file: Path) -> tuple[tuple[int, int, int], int, list[tuple[int, int]]]:
        with NpzFile(file) as f:
            f.require(*NPZ_KEYS)
            shape, dtype = f.header("image")
            fs = frame_shape(shape, dtype, file, "image", "hwc")
            n = shape[0]
            a_dim = action_dim_of(*f.header("action"), file, "action", n, "image")
            vector(f["reward"], file, "reward", n)
            vector(f["is_terminal"], file, "is_terminal", n)
            return fs, a_dim, split_firsts(vector(f["is_first"], file, "is_first", n) > 0, file, "is_first")

    def read_file(file: Path, eps: list[tuple[int, int]]) -> Iterator[Episode]:
        with NpzFile(file) as f:
            img = f["image"]
            n = len(img)
            frames = frames_chw(img, file, "image", "hwc")
            act = actions(f["action"], file, "action", n)
            rew = vector(f["reward"], file, "reward", n)
            disc = 1.0 - (vector(f["is_terminal"], file, "is_terminal", n) > 0).astype(np.float32)
            for s, e in eps:
                yield frames[s:e], act[s + 1 : e], rew[s + 1 : e], disc[s + 1 : e]

    return scan_files(path, ".npz", "vd4rl-npz", ("image", "action"), scan_file, read_file)
