"""`logger=wandb`: the run's scalars, eval videos and resolved config in Weights & Biases.

The W&B run id is kept in the run directory (`wandb.json`), so a resumed run continues the same W&B
run. Each scalar is logged with the run's clock (`frame` online, `update` offline) as its x axis,
as in TensorBoard. A resumed run recomputes exactly what it computed after its checkpoint, and W&B
cannot drop logged points, so what was already sent (up to `logged_through`) is not sent again:
every x appears once, with the values of a run never stopped. `WANDB_MODE=offline` (no network)
writes the run under `<run dir>/wandb/` for `wandb sync`.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

STATE_FILE = "wandb.json"


class WandbSink:
    def __init__(
        self,
        run_dir: Path,
        *,
        resumed: bool,
        axis: str,
        project: str,
        entity: str,
        group: str,
        config: Mapping[str, Any],
    ) -> None:
        import wandb

        self.state_path = run_dir / STATE_FILE
        state = self._read_state() if resumed else None
        if state is None:  # a fresh start (or a resume of a run that never logged to W&B)
            state = {"id": secrets.token_hex(4), "logged_through": -1}
        self.state, self.axis = state, axis
        self.skip_through = int(state["logged_through"])  # sent by an earlier process of this run
        self.run = wandb.init(
            id=state["id"],
            resume="allow",
            dir=str(run_dir),
            project=project,
            entity=entity or None,
            group=group or None,
            config=dict(config),
            name=f"{run_dir.parent.parent.name}/{run_dir.parent.name}/{run_dir.name}",
            reinit="finish_previous",
        )
        self.run.define_metric(axis)
        self.run.define_metric("*", step_metric=axis)
        self._write_state()

    def _read_state(self) -> dict[str, Any] | None:
        try:
            state = json.loads(self.state_path.read_text())
            return {"id": str(state["id"]), "logged_through": int(state["logged_through"])}
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError) as e:
            raise RuntimeError(
                f"{self.state_path}: unreadable W&B state ({e}); delete it to start a new W&B run"
            ) from None

    def _write_state(self) -> None:
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state))
        os.replace(tmp, self.state_path)

    def log(self, x: int, values: Mapping[str, Any]) -> None:
        """`values`: W&B keys (`train/critic_loss`, `eval/video`, ...) at clock value `x`."""
        if x <= self.skip_through:
            return
        self.run.log({**values, self.axis: x})
        if x > self.state["logged_through"]:
            self.state["logged_through"] = x
            self._write_state()

    def video(self, x: int, path: Path, fps: float) -> None:
        import wandb

        # W&B takes a whole number of frames per second
        self.log(x, {"eval/video": wandb.Video(str(path), format="mp4", fps=max(1, round(fps)))})

    def close(self) -> None:
        self.run.finish()
