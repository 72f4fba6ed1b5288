"""`taco data from-run`: a dataset of the replay a run's last checkpoint holds, and reading a run
directory (its resolved config and checkpoint state) for the data commands."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from taco_rl.runners.core.config import Config
from taco_rl.runners.data.datasets import DatasetError, write_dataset


def load_run_config(run_dir: Path) -> Config:
    """The resolved config a run saved in ``config.yaml``: an OfflineConfig for a `taco offline` run
    (its config names the dataset it trained on), a Config for a `taco train` run."""
    from omegaconf import DictConfig, OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from taco_rl.runners.core.config import OfflineConfig, validate

    file = run_dir / "config.yaml"
    if not file.is_file():
        raise DatasetError(f"{file}: missing; {run_dir} is not a run directory")
    try:
        saved = OmegaConf.load(file)
        schema = OfflineConfig if isinstance(saved, DictConfig) and "dataset" in saved else Config
        merged = OmegaConf.merge(OmegaConf.structured(schema), saved)
        # OmegaConf types to_container as any container (any key type); a dataclass's is a str-keyed dict
        cfg = schema(**OmegaConf.to_container(merged))  # type: ignore[arg-type]
    except (OmegaConfBaseException, OSError, ValueError, TypeError) as e:
        raise DatasetError(f"{file}: unreadable run config ({str(e).splitlines()[0]})") from None
    validate(cfg)
    return cfg


def run_state(run_dir: Path) -> dict[str, Any]:
    from taco_rl.runners.core import checkpoint as ckpt

    state_path = run_dir / "checkpoint" / "state.pt"
    if not state_path.is_file():
        raise DatasetError(f"{state_path}: missing; the run has no checkpoint yet")
    return ckpt.load(state_path)


def from_run(run_dir: str | Path, out: str, *, overwrite: bool = False) -> dict[str, Any]:
    """A dataset of the replay a run's last checkpoint holds (a "medium-replay" dataset). The run
    directory is locked meanwhile, as a training run locks it: not while that run is going."""
    from taco_rl.runners.core.config import OfflineConfig

    run = Path(run_dir).expanduser().resolve()
    cfg = load_run_config(run)
    if isinstance(cfg, OfflineConfig):
        raise DatasetError(
            f"{run} is an offline run (trained on the dataset {cfg.dataset}): it keeps no replay of its own; "
            f"use that dataset, or roll out its policy with `taco data collect policy={run}`"
        )
    with _run_lock(run):  # a run writing its next checkpoint could rewrite the replay being read
        return _from_run(run, cfg, out, overwrite)


def _run_lock(run: Path):
    from taco_rl.runners.core.rundir import RunDirError, RunLock

    try:
        return RunLock(run)
    except RunDirError as e:
        raise DatasetError(
            f"{run} is in use by a running process ({e.holder}); its checkpoint can change "
            "while it is read: rerun once that run has stopped"
        ) from None
    except OSError as e:
        raise DatasetError(f"{run}: cannot lock the run directory ({e.strerror})") from None


def _from_run(run: Path, cfg: Config, out: str, overwrite: bool) -> dict[str, Any]:
    from taco_rl.runners.core.replay import Replay, ReplayFormatError

    state = run_state(run)
    name = state.get("replay_dir")
    if name not in ("replay_a", "replay_b"):
        raise DatasetError(
            f"{run / 'checkpoint' / 'state.pt'}: names replay folder {name!r}, expected replay_a or replay_b"
        )
    try:
        replay = Replay.load(run / "checkpoint" / name, "cpu")
    except ReplayFormatError as e:
        raise DatasetError(str(e)) from None
    if replay.total_added != state.get("replay_total"):
        raise DatasetError(
            f"{run / 'checkpoint' / name}: holds {replay.total_added} slots, state.pt expects "
            f"{state.get('replay_total')}"
        )
    counters = state.get("counters", {})
    source = {
        "kind": "from-run",
        "run": str(run),
        "frame": counters.get("frame"),
        "agent": cfg.agent,
        "aux": cfg.aux,
        "seed": cfg.seed,
        "image_size": cfg.image_size,
        "action_repeat": cfg.action_repeat,
    }
    return write_dataset(
        replay, out, task=cfg.task, source=source, overwrite=overwrite, files=run / "checkpoint" / name
    )
