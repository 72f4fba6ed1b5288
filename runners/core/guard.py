"""The non-finite guard: training that produced NaN or inf stops, naming what and when, before any of
it is evaluated or written to a checkpoint.

Learner metrics are 0-dim tensors (on the learner's device); checking each one as it is produced
would force a host sync every update. The checks here take a whole list at once (one sync) and run
where the values are read anyway: at log time, before an evaluation and before a checkpoint.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch


class NonFiniteError(RuntimeError):
    """A loss, metric or parameter became NaN or inf; `name` and `step` say which and when."""

    def __init__(self, message: str, name: str = "", step: int | None = None) -> None:
        super().__init__(message)
        self.name, self.step = name, step


def check_metrics(history: Sequence[Mapping[str, Any]], steps: Sequence[int]) -> None:
    """Raise NonFiniteError naming the first metric (in update order) that is NaN or inf.

    `history[i]` is the metrics dict returned by the update at agent step `steps[i]`.
    """
    if not history:
        return
    try:
        rows = [torch.stack([torch.as_tensor(v).detach().float().reshape(()) for v in h.values()]) for h in history]
        finite = torch.isfinite(torch.stack(rows))
    except RuntimeError:  # updates returned different keys or devices: check one by one
        finite = None
    if finite is not None and bool(finite.all()):
        return
    for i, h in enumerate(history):
        for name, v in h.items():
            value = float(v)
            if value != value or value in (float("inf"), float("-inf")):
                raise NonFiniteError(f"non-finite {name} ({value}) at step {steps[i]}", name, steps[i])


def named_tensors(obj: Any, prefix: str = "") -> Iterator[tuple[str, torch.Tensor]]:
    """(dotted name, tensor) for every floating tensor in a nested dict/list state."""
    if torch.is_tensor(obj):
        if obj.is_floating_point() or obj.is_complex():
            yield prefix, obj
    elif isinstance(obj, Mapping):
        for k, v in obj.items():
            yield from named_tensors(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from named_tensors(v, f"{prefix}.{i}" if prefix else str(i))


def check_state(state: Mapping[str, Any], step: int | None = None) -> None:
    """Raise NonFiniteError naming the first floating tensor in a (nested) state dict that holds a
    NaN or inf: parameters, optimizer moments, anything a checkpoint would store. One host sync."""
    named = list(named_tensors(state))
    if not named:
        return
    by_device: dict[torch.device, list[int]] = {}
    for i, (_, t) in enumerate(named):
        by_device.setdefault(t.device, []).append(i)
    bad: list[int] = []
    for idx in by_device.values():
        ok = torch.stack([torch.isfinite(named[i][1]).all() for i in idx]).cpu()
        bad += [idx[j] for j in torch.nonzero(~ok).flatten().tolist()]
    if bad:
        name = named[min(bad)][0]
        at = f" at step {step}" if step is not None else ""
        raise NonFiniteError(f"non-finite values in {name}{at}", name, step)
