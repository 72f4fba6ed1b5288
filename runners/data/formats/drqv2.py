"""DrQ-v2 / TACO replay episode files: one ``*.npz`` per episode, written by their replay storage.

Keys: ``observation`` (T+1, 3S, H, W) uint8 *frame stacks* (the newest frame is the last three
channels; only it is kept, so each frame is stored once), ``action`` (T+1, A), ``reward`` (T+1,)
or (T+1, 1), ``discount`` (same; the env discount, 0 only at a true terminal). Record 0 is the
reset (zero action, reward 0); transition i takes the action, reward and discount of record i+1.
The length in the file name is never used; other keys are ignored.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from taco_rl.runners.data.datasets import DatasetError
from taco_rl.runners.data.formats.common import (
    Episode,
    NpzFile,
    Plan,
    action_dim_of,
    actions,
    frame_shape,
    frames_chw,
    scan_files,
    vector,
)

KEYS = ("observation", "action", "reward", "discount")


def scan(path: str | os.PathLike) -> Plan:
    def scan_file(file: Path) -> tuple[tuple[int, int, int], int, list[tuple[int, int]]]:
        with NpzFile(file) as f:
            f.require(*KEYS)
            shape, dtype = f.header("observation")
            fs = frame_shape(shape, dtype, file, "observation", "chw", None)
            n = shape[0]
            a_dim = action_dim_of(*f.header("action"), file, "action", n, "observation")
            for key in ("reward", "discount"):
                k_shape, k_dtype = f.header(key)
                if k_shape[:1] != (n,):
                    raise DatasetError(f"{file}: key '{key}' has shape {k_shape}, 'observation' has {n} records")
                vector(np.empty((0, *k_shape[1:]), k_dtype), file, key, 0)
            return fs, a_dim, [(0, n)]

    def read_file(file: Path, eps: list[tuple[int, int]]) -> Iterator[Episode]:
        with NpzFile(file) as f:
            obs = f["observation"]
            n = len(obs)
            yield (
                frames_chw(obs, file, "observation", "chw", None),
                actions(f["action"], file, "action", n)[1:],
                vector(f["reward"], file, "reward", n)[1:],
                vector(f["discount"], file, "discount", n)[1:],
            )

    return scan_files(path, ".npz", "drqv2-npz", ("observation", "action"), scan_file, read_file)
