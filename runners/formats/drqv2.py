"""DrQ-v2 / TACO replay episode files: one ``*.npz`` per episode, written by their replay storage.

Keys: ``observation`` (T+1, 3S, H, W) uint8 *frame stacks* (the newest frame is the last three
channels; only it is kept, so each frame is stored once), ``action`` (T+1, A), ``reward`` (T+1,)
or (T+1, 1), ``discount`` (same; the env discount, 0 only at a true terminal). Record 0 is the
reset (zero action, reward 0); transition i takes the action, reward and discount of record i+1.
The length in the file name is never used; other keys are ignored.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import numpy as np

from ..datasets import DatasetError
from .common import Episode, NpzFile, Plan, actions, check_same, frame_shape, frames_chw, list_files, vector

KEYS = ("observation", "action", "reward", "discount")


def scan(path: str | os.PathLike) -> Plan:
    files = list_files(path, ".npz")
    fshape = action_dim = None
    slots = episodes = 0
    kept: list[Path] = []
    for file in files:
        with NpzFile(file) as f:
            f.require(*KEYS)
            shape, dtype = f.header("observation")
            fs = frame_shape(shape, dtype, file, "observation", "chw", None)
            n = shape[0]
            check_same("frame shape", fs, fshape, file, "observation")
            for key in ("action", "reward", "discount"):
                k_shape, k_dtype = f.header(key)
                if k_shape[:1] != (n,):
                    raise DatasetError(f"{file}: key '{key}' has shape {k_shape}, 'observation' has {n} records")
                check = actions if key == "action" else vector
                check(np.empty((0, *k_shape[1:]), k_dtype), file, key, 0)
            a_shape, _ = f.header("action")
            a_dim = 1 if len(a_shape) == 1 else int(a_shape[1])
            check_same("action dim", a_dim, action_dim, file, "action")
        fshape, action_dim = fs, a_dim
        if n >= 2:
            kept.append(file)
            slots += n
            episodes += 1
    if episodes == 0:
        raise DatasetError(f"{path}: no episode with at least one transition in {len(files)} file(s)")

    def read() -> Iterator[Episode]:
        for file in kept:
            with NpzFile(file) as f:
                obs = f["observation"]
                n = len(obs)
                yield (frames_chw(obs, file, "observation", "chw", None), actions(f["action"], file, "action", n)[1:],
                       vector(f["reward"], file, "reward", n)[1:], vector(f["discount"], file, "discount", n)[1:])

    source = {"format": "drqv2-npz", "path": str(Path(path).expanduser().resolve()), "files": len(files),
              "dropped_empty_episodes": len(files) - len(kept)}
    return Plan(slots, episodes, fshape, action_dim, read, source)  # type: ignore[arg-type]
