"""Atomic checkpoints: tensors and plain values only, loaded with `weights_only=True`.

A checkpoint directory holds `state.pt` (learner, optimizers, RNG states, counters) and two replay
folders (memory-mapped tensors) used in turn: each checkpoint saves the replay into the folder the
current `state.pt` does not name, then replaces `state.pt` atomically. A run killed at any moment
resumes from the last complete checkpoint.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch


class CheckpointError(RuntimeError):
    pass


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_atomic(obj: dict[str, Any], path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load(path: Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt, truncated, or holds objects that weights_only refuses
        raise CheckpointError(f"cannot load checkpoint {path}: {type(e).__name__}: {e}. "
                              "Delete the run directory (or pass a new run_dir=) to start over.") from None
