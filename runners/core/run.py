"""What every run shares, online or offline: the run directory (locked for the run), seeding, the
device, the learner a config describes, the evaluation env and protocol, logs, videos, the progress
bar, the non-finite guard, and checkpoints of learner, optimizers, RNG and counters (two generations,
written atomically, resumed exactly; `resume_from=` starts from another run's).

A run is keyed on one counter, `clock`: env frames online (runners/online/train.py), learner updates
offline (runners/offline/train.py). Subclasses build their data (the online replay and env, the offline
dataset) inside `with self.releasing_lock():` and then call `open()`; they add to checkpoints
through `checkpoint_extra` / `write_payload` / `restore_extra`, feed learner metrics through
`record` / `drain_metrics`, and write their loop as `loop()` (`train()` wraps it: interrupts, cleanup).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from taco_rl.envs import make_env
from taco_rl.runners.core import checkpoint as ckpt
from taco_rl.runners.core.config import Config, ConfigError, config_hash, run_directory, to_yaml
from taco_rl.runners.core.evaluation import Episodes, EvalPool, eval_worker_count, play_serial
from taco_rl.runners.core.guard import NonFiniteError, check_metrics, check_state
from taco_rl.runners.core.logger import Logger, mean_metrics, write_video
from taco_rl.runners.core.rundir import RunDirError, RunInterrupted, RunLock, prepare_run_dir  # noqa: F401 (re-exported)
from taco_rl.runners.core.workers import WorkerError

if TYPE_CHECKING:
    from taco_rl.agents import PixelActorCritic

EVAL_SEED_OFFSET = 10_000


def resolve_device(spec: str) -> torch.device:
    """The device `spec` names, or a ConfigError when this machine has no such device."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(spec)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={spec!r}: CUDA is not available here; use device=cpu or device=auto")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(
            f"device={spec!r}: expected cuda:0 to cuda:{torch.cuda.device_count() - 1} "
            f"({torch.cuda.device_count()} GPUs here)"
        )
    return device


def build_agent(
    cfg: Config, obs_shape: tuple[int, int, int], action_dim: int, device: torch.device
) -> PixelActorCritic:
    """The learner a config describes (shared by train, offline and bench)."""
    from taco_rl.agents import AGENTS, OFFLINE_AGENTS

    cls = {**AGENTS, **OFFLINE_AGENTS}[cfg.agent]
    kwargs: dict[str, Any] = dict(
        device=device,
        lr=cfg.lr,
        feature_dim=cfg.feature_dim,
        hidden_dim=cfg.hidden_dim,
        critic_tau=cfg.critic_tau,
        expl_steps=cfg.expl_steps,
        precision=cfg.precision,
        aux=cfg.aux,
        taco_k=cfg.taco_k,
        taco_weight=cfg.taco_weight,
        curl_weight=cfg.curl_weight,
        reward_weight=cfg.reward_weight,
        latent_dim=cfg.latent_action_dim,
        action_encoder=cfg.action_encoder,
        latent_critic=cfg.latent_critic,
        optimizer=cfg.optimizer,
    )
    kwargs.update({key: getattr(cfg, key) for key in cls.options})
    return cls(obs_shape, action_dim, **kwargs)


def env_kwargs(cfg: Config) -> dict[str, Any]:
    return dict(
        action_repeat=cfg.action_repeat,
        frame_stack=cfg.frame_stack,
        image_size=cfg.image_size,
        fast_render=cfg.fast_render,
    )


def logger_sinks(cfg: Config) -> set[str]:
    """What `logger=` names beside the CSV files: {"tensorboard"}, {"wandb"}, both, or none."""
    return set() if cfg.logger == "none" else {s.strip() for s in cfg.logger.split(",")}


def wandb_settings(cfg: Config) -> dict[str, Any] | None:
    if "wandb" not in logger_sinks(cfg):
        return None
    return dict(
        project=cfg.wandb_project, entity=cfg.wandb_entity, group=cfg.wandb_group, config=dataclasses.asdict(cfg)
    )


class Run:
    clock = "frame"  # the counter evaluations, logs, videos and checkpoints are keyed on
    step_key = "step"  # the counter passed to the learner as its step
    eval_every = 0  # in `clock` units
    agent: PixelActorCritic  # the learner (the subclass builds it)

    def __init__(self, cfg: Config, progress: bool = True) -> None:
        self.cfg, self.progress = cfg, progress
        self.device = resolve_device(cfg.device)
        self.run_dir = run_directory(cfg)
        prepare_run_dir(self.run_dir)
        self.lock = RunLock(self.run_dir)  # one process per run directory, from here to the end of train()
        torch.manual_seed(cfg.seed)
        self.bar = None
        self._logger: Logger | None = None  # opened by open()
        self.ckpt_dir = self.run_dir / "checkpoint"
        self.checkpoints = ckpt.Checkpoints(self.ckpt_dir, self.clock)
        self.counters: dict[str, int] = {}
        self.history: list[dict[str, Any]] = []  # learner metrics since the last log, and their steps
        self.history_steps: list[int] = []
        self.source: tuple[Path, int] | None = None  # (run, clock) that resume_from started this run from
        self.eval_pool: EvalPool | None = None

    @contextlib.contextmanager
    def releasing_lock(self) -> Iterator[None]:
        """Wrap a subclass's construction: if it fails, the run directory is free again at once."""
        try:
            yield
        except BaseException:
            self.lock.release()
            raise

    def make_eval_env(self):
        cfg = self.cfg  # videos are rendered by the eval env at video_size; observations are unchanged
        video: dict[str, Any] = dict(render_mode="rgb_array", render_size=cfg.video_size) if cfg.save_video else {}
        self.eval_env = make_env(cfg.task, cfg.seed + EVAL_SEED_OFFSET, **env_kwargs(cfg), **video)
        return self.eval_env

    def open(self) -> bool:
        """After the learner and data exist: resume from the checkpoint if there is one (else from
        `resume_from`), write the resolved config, open the logs cut to that checkpoint. Returns
        whether the run resumed."""
        with self.releasing_lock():
            resumed = self._maybe_resume()
            (self.run_dir / "config.yaml").write_text(to_yaml(self.cfg))
            self._logger = Logger(
                self.run_dir,
                resume_frame=self.counters[self.clock] if resumed else None,
                axis=self.clock,
                tensorboard="tensorboard" in logger_sinks(self.cfg),
                wandb=wandb_settings(self.cfg),
            )
        if resumed:
            origin = f" (from {self.source[0]})" if self.source is not None else ""
            print(f"resuming {self.run_dir} at {self.clock} {self.counters[self.clock]}{origin}", flush=True)
        return resumed

    def train(self) -> Path:
        """Run `loop()`. Ctrl-C or SIGTERM (see rundir.sigterm_as_interrupt) raises RunInterrupted
        saying where a rerun resumes; logs, progress bar and lock are released however it ends."""
        try:
            return self.loop()
        except KeyboardInterrupt as e:
            raise RunInterrupted(self.resume_point, str(e) or "Ctrl-C", self.clock) from None
        finally:
            self.close_eval_pool()  # no worker outlives its run
            self.close()
            if self.bar is not None:
                self.bar.close()
            if self._logger is not None:
                self._logger.close()
            self.lock.release()

    def loop(self) -> Path:
        raise NotImplementedError

    @property
    def logger(self) -> Logger:
        """The run's logs (CSV, TensorBoard, W&B), opened by `open`."""
        if self._logger is None:
            raise RuntimeError("the run's logs are not open: open() opens them")
        return self._logger

    def close(self) -> None:
        """Release what the subclass's loop holds (called however `train()` ends)."""

    # ------------------------------------------------------------------ checkpoints
    def checkpoint_extra(self) -> dict[str, Any]:
        """Plain values the subclass stores in the state beside the learner."""
        return {}

    def write_payload(self, folder: Path) -> None:
        """Write the subclass's bulk data (the replay) into `folder` (written before the state)."""

    def payload_bytes(self, folder: Path) -> int:
        """Disk space `write_payload(folder)` needs beyond what `folder` holds (checked before writing)."""
        return 0

    has_payload = False  # whether write_payload writes anything (and restore_extra reads it)

    def check_resume(self, state: dict[str, Any]) -> None:
        """Refuse a checkpoint the subclass cannot continue (checked before anything is loaded): a
        CheckpointError raised here ends the run; it is not taken for damage."""

    def restore_extra(self, state: dict[str, Any], payload: Path) -> None:
        """Restore what `checkpoint_extra` / `write_payload` stored; raise CheckpointError when the
        payload is damaged (the previous generation is tried next)."""

    @property
    def resume_point(self) -> int | None:
        """The `clock` value a rerun of the same command starts from (None: from scratch)."""
        if self.checkpoints.frame is not None:
            return self.checkpoints.frame
        return self.source[1] if self.source is not None else None

    def _maybe_resume(self) -> bool:
        if self.checkpoints.restore(self._restore) is not None:
            return True
        if not self.cfg.resume_from:
            return False
        source = Path(self.cfg.resume_from).expanduser().resolve()
        with RunLock(source):  # not while that run is writing it
            ckpt.Checkpoints(source / "checkpoint", self.clock).restore(
                lambda state, payload: self._restore(state, payload, source)
            )
        self.source = (source, self.counters[self.clock])
        return True

    def _restore(self, state: dict[str, Any], payload: Path, source: Path | None = None) -> None:
        """Apply one checkpoint generation (this run's, or with `source` another run's)."""
        try:
            self.check_resume(state)
        except ckpt.CheckpointMismatch:
            raise
        except ckpt.CheckpointError as e:  # a refusal, not damage: no fallback to the previous generation
            raise ckpt.CheckpointMismatch(str(e)) from None
        if source is None and state.get("config_hash") != config_hash(self.cfg):
            raise ckpt.CheckpointMismatch(
                f"{self.ckpt_dir} was written by a different configuration (hash {state.get('config_hash')} "
                f"vs {config_hash(self.cfg)}); pass a new run_dir= to start a fresh run"
            )
        try:
            self.agent.load_state_dict(state["agent"])
        except (ValueError, RuntimeError, KeyError) as e:
            if source is not None:
                raise ckpt.CheckpointMismatch(
                    f"resume_from={source}: its learner does not fit this configuration (only settings that "
                    f"keep the networks' shapes can change): {str(e).splitlines()[0]}"
                ) from None
            raise ckpt.CheckpointError(f"its learner state does not load: {str(e).splitlines()[0]}") from None
        self.restore_extra(state, payload)
        ckpt.set_rng_state(state["rng"])
        self.counters = dict(state["counters"])

    def save_checkpoint(self) -> None:
        """A new checkpoint generation (see runners/core/checkpoint.py): the payload into the folder the
        newest state does not name, then the state atomically; a kill or a failed write leaves the
        previous one whole. Nothing is written from a state that holds NaN/inf."""
        self.check_finite(parameters=False)  # parameters: checked in Checkpoints.save
        state = {
            "format": 1,
            "config_hash": config_hash(self.cfg),
            "agent": self.agent.state_dict(),
            "rng": ckpt.rng_state(),
            "counters": dict(self.counters),
            **self.checkpoint_extra(),
        }
        try:
            self.checkpoints.save(
                state,
                self.counters[self.clock],
                self.write_payload if self.has_payload else None,
                self.counters[self.step_key],
                self.payload_bytes if self.has_payload else None,
            )
        except NonFiniteError as e:
            raise NonFiniteError(self._diverged(str(e)), e.name, e.step) from None

    # ------------------------------------------------------------------ the non-finite guard
    def record(self, metrics: dict[str, Any], step: int) -> None:
        """Keep one update's metrics (0-dim tensors: no host sync here) until the next log."""
        self.history.append(metrics)
        self.history_steps.append(step)

    def drain_metrics(self) -> dict[str, float]:
        """The means of the metrics recorded since the last call (one sync), after the guard."""
        self.check_finite(parameters=False)
        means = mean_metrics(self.history)
        self.history.clear()
        self.history_steps.clear()
        return means

    def check_finite(self, parameters: bool = True) -> None:
        """Raise NonFiniteError (saying how to go on) if a recorded metric or, with `parameters`,
        any parameter or optimizer state is NaN/inf. One host sync each."""
        try:
            check_metrics(self.history, self.history_steps)
            if parameters:
                check_state(self.agent.state_dict(), self.counters[self.step_key])
        except NonFiniteError as e:
            raise NonFiniteError(self._diverged(str(e)), e.name, e.step) from None

    def _diverged(self, what: str) -> str:
        head = (
            f"{what} (noticed at {self.clock} {self.counters[self.clock]}): training stopped and no "
            "checkpoint was written from this state"
        )
        if self.checkpoints.frame is not None:
            run, at = self.run_dir, self.checkpoints.frame
        elif self.source is not None:
            run, at = self.source
        else:
            return f"{head}; no checkpoint exists yet: change the settings (e.g. a lower lr=) and start again"
        return (
            f"{head}. The last good checkpoint is at {self.clock} {at} in {run}: to go on from it with "
            f"other settings, run the command with those settings (e.g. a lower lr=) and resume_from={run}"
        )

    # ------------------------------------------------------------------ evaluation
    def log_row(self, kind: str, metrics: dict[str, Any]) -> dict[str, float]:
        c = self.counters
        return self.logger.log(kind, c["frame"], c["step"], metrics)

    def where(self) -> str:
        return f"frame {self.counters['frame']} | step {self.counters['step']}"

    def eval_metrics(self, returns: list[float], lengths: list[int]) -> dict[str, float]:
        return {
            "episode_return": float(np.mean(returns)),
            "return_std": float(np.std(returns)),
            "episode_length": float(np.mean(lengths)),
            "episodes": len(returns),
        }

    def evaluate(self) -> dict[str, float]:
        c, cfg = self.counters, self.cfg
        self.check_finite()  # a diverged learner is neither evaluated nor checkpointed
        self.agent.train(False)
        if self.bar is not None and not self.bar.disable:
            self.bar.set_description_str(f"evaluating ({cfg.eval_episodes} episodes)", refresh=True)
        seeds = [cfg.seed + EVAL_SEED_OFFSET + c["evals"] * cfg.eval_episodes + i for i in range(cfg.eval_episodes)]
        played = self.play_eval(seeds, c[self.step_key])
        returns, lengths, video = played.returns, played.lengths, played.video
        self.agent.train(True)
        if self.bar is not None:
            self.bar.set_description_str("train", refresh=False)
        if video:
            path = self.run_dir / "videos" / f"eval_{c[self.clock]:09d}.mp4"
            fps = float(self.eval_env.metadata["render_fps"])  # one frame per agent step, at the task's rate
            write_video(path, video, fps)
            self.logger.video(c[self.clock], path, fps)
        c["evals"] += 1
        c["last_eval"] = c[self.clock]
        c["next_eval"] = (c[self.clock] // self.eval_every + 1) * self.eval_every
        row = self.log_row("eval", self.eval_metrics(returns, lengths))
        say(
            self.bar,
            f"eval | {self.where()} | return {row['episode_return']:.1f}"
            f" +- {row['return_std']:.1f}{self.score_text(row)} over {len(returns)} episodes",
        )
        return row

    def score_text(self, row: dict[str, float]) -> str:
        return ""

    def play_eval(self, seeds: list[int], step: int) -> Episodes:
        """The evaluation's episodes: in the eval worker processes (started at the first evaluation,
        reused after) or, with eval_workers=0, on the in-process eval env. A worker that fails ends
        the run with a WorkerError after a checkpoint of the state before this evaluation (a rerun
        resumes there and evaluates again)."""
        cfg = self.cfg
        workers = eval_worker_count(cfg.eval_workers, cfg.eval_episodes)
        if workers == 0:
            return play_serial(self.eval_env, self.agent, step, seeds, cfg.save_video)
        try:
            if self.eval_pool is None:
                video = dict(render_mode="rgb_array", render_size=cfg.video_size) if cfg.save_video else {}
                self.eval_pool = EvalPool(workers, cfg.task, cfg.seed + EVAL_SEED_OFFSET, {**env_kwargs(cfg), **video})
            return self.eval_pool.play(self.agent, step, seeds, cfg.save_video)
        except WorkerError as e:
            self.close_eval_pool()
            self.agent.train(True)
            where = f"{self.clock} {self.counters[self.clock]}"
            try:
                self.save_checkpoint()
                saved = f"a checkpoint at {where} was written: rerun the same command to resume there"
            except Exception as write_error:  # noqa: BLE001 - the worker's failure is the one to report
                saved = f"no checkpoint could be written there ({write_error}); a rerun resumes from the last one"
            raise WorkerError(
                f"evaluation at {where} stopped: {e}; {saved} (eval_workers=0 evaluates in this process)"
            ) from None

    def close_eval_pool(self) -> None:
        pool, self.eval_pool = self.eval_pool, None
        if pool is not None:
            pool.close()


def progress_bar(total: int, initial: int, enabled: bool, unit: str = "frame"):
    from tqdm import tqdm

    return tqdm(
        total=total,
        initial=initial,
        unit=unit,
        disable=not enabled,
        dynamic_ncols=True,
        smoothing=0.05,
        mininterval=1.0,
    )


def say(bar, text: str) -> None:
    if bar is None or bar.disable:
        print(text, flush=True)
    else:
        bar.write(text)
