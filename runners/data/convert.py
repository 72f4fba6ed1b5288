"""Datasets from other datasets: `taco data import` (a published format -> the native layout) and
`taco data concat` (several datasets of one task -> one)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from taco_rl.runners.core.config import ConfigError
from taco_rl.runners.data.datasets import DatasetError, DatasetWriter, dataset_info, load_dataset


def concat(inputs: list[str], out: str, *, overwrite: bool = False, progress: bool = False) -> dict[str, Any]:
    """One dataset holding every episode of ``inputs`` in order; refuses mismatched tasks or shapes."""
    from taco_rl.runners.data.datasets import iter_episodes

    if len(inputs) < 2:
        raise ConfigError(f"concat needs at least two datasets, got {len(inputs)}")
    infos = [dataset_info(p) for p in inputs]
    ref = infos[0]
    for info in infos[1:]:
        for key in ("task", "frame_shape", "action_dim"):
            if info[key] != ref[key]:
                raise DatasetError(
                    f"cannot concatenate: {info['path']} has {key}={info[key]}, {ref['path']} has {key}={ref[key]}"
                )
    from taco_rl.runners.data.formats.common import _bar

    source = {
        "kind": "concat",
        "inputs": [{"path": i["path"], "checksum": i["checksum"], "source": i["source"]} for i in infos],
    }
    slots = sum(i["slots"] for i in infos)
    with DatasetWriter(out, slots, ref["frame_shape"], ref["action_dim"], overwrite=overwrite) as writer:
        bar = _bar(sum(i["episodes"] for i in infos), progress)
        for path in inputs:
            rb, info = load_dataset(path, frame_stack=1, nstep=1)
            for ep in iter_episodes(rb, info["path"]):
                writer.add_episode(*ep)
                bar.update(1)
        bar.close()
        return writer.finish(task=ref["task"], source=source)


def _guess_task(path: str) -> str | None:
    from taco_rl.envs import TASKS

    parts = Path(path).expanduser().resolve().parts
    found = [p for p in parts if p in TASKS]
    return found[-1] if found else None


def import_dataset(
    fmt: str,
    path: str,
    out: str,
    *,
    task: str | None = None,
    obs_key: str | None = None,
    overwrite: bool = False,
    progress: bool = False,
) -> dict[str, Any]:
    """Import ``path`` in format ``fmt`` (vd4rl, drqv2, minari) as a native dataset at ``out``."""
    from taco_rl.runners.data.datasets import DatasetError
    from taco_rl.runners.data.formats import drqv2, minari, vd4rl
    from taco_rl.runners.data.formats.common import build

    readers = {"vd4rl": vd4rl.scan, "drqv2": drqv2.scan, "minari": lambda p: minari.scan(p, obs_key)}
    if fmt not in readers:
        raise ConfigError(f"import format {fmt!r}: expected one of {', '.join(readers)}")
    if obs_key and fmt != "minari":
        raise ConfigError("obs_key= applies to minari imports only")
    if fmt == "minari":
        minari.locate(path)  # a folder or a local dataset ID; says so when it is neither
    elif not Path(path).expanduser().exists():
        raise DatasetError(f"{path}: no such file or folder")
    plan = readers[fmt](path)
    task = task or plan.task or _guess_task(path)  # given, else recorded in the files, else named by the path
    if not task:
        raise ConfigError(f"cannot tell the task from {path}; pass task=NAME (e.g. task=walker_walk)")
    return build(plan, out, task=task, overwrite=overwrite, progress=progress)
