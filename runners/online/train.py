"""Online training: env -> replay -> learner, with evaluation, logs, videos, checkpoints and resume.

Episode ends are the loop's joints: evaluation and checkpoints happen there, and every training
episode is reset with a seed derived from (seed, episode index). A checkpoint therefore pins the
whole future of the run, and a resumed run continues exactly as one that never stopped.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from taco_rl.envs import make_env
from taco_rl.envs.registry import env_shapes
from taco_rl.runners.core import checkpoint as ckpt
from taco_rl.runners.core.config import Config
from taco_rl.runners.core.replay import Replay, ReplayFormatError
from taco_rl.runners.core.run import (  # noqa: F401
    EVAL_SEED_OFFSET,
    Run,
    RunDirError,
    build_agent,
    env_kwargs,
    prepare_run_dir,
    progress_bar,
    resolve_device,
    say,
)
from taco_rl.runners.core.workers import EnvWorker, close_all
from taco_rl.runners.online.stepper import EnvStepper
from taco_rl.runners.online.vector_loop import vector_loop


def env_overlap(cfg: Config, device: torch.device) -> bool:
    """Whether the training env steps in a worker thread during updates (same numbers either way)."""
    if cfg.env_overlap == "auto":
        return device.type == "cuda"
    return cfg.env_overlap == "thread"


def replay_device(cfg: Config, device: torch.device, frame_shape: tuple[int, int, int]) -> torch.device:
    """The learner's device when the replay fits in half of its free memory, else the CPU."""
    if cfg.replay_device == "cpu" or device.type != "cuda":
        return torch.device("cpu")
    need = cfg.capacity * (int(np.prod(frame_shape)) + 64)
    free, _ = torch.cuda.mem_get_info(device)
    return device if need < free // 2 else torch.device("cpu")


def make_replay(cfg: Config, frame_shape: tuple[int, int, int], action_dim: int, device: torch.device) -> Replay:
    return Replay(
        cfg.capacity,
        frame_shape,
        action_dim,
        frame_stack=cfg.frame_stack,
        nstep=cfg.nstep,
        gamma=cfg.gamma,
        seq_len=cfg.taco_k if cfg.aux == "taco" else 0,
        device=device,
    )


class Trainer(Run):
    stepper: EnvStepper  # the one-env loop's (made at its first call)
    train_workers: list[EnvWorker]  # the num_envs > 1 loop's env workers (vector_loop starts them)

    def __init__(self, cfg: Config, progress: bool = True) -> None:
        super().__init__(cfg, progress)
        with self.releasing_lock():
            self.eval_every = cfg.eval_every_frames
            self.env = make_env(cfg.task, cfg.seed, **env_kwargs(cfg))
            self.make_eval_env()
            obs_shape, action_dim = env_shapes(self.env)
            self.frame_shape = (3, *obs_shape[1:])
            self.agent = build_agent(cfg, obs_shape, action_dim, self.device)
            self.replay = make_replay(
                cfg, self.frame_shape, action_dim, replay_device(cfg, self.device, self.frame_shape)
            )
            self.counters = {
                "step": 0,
                "frame": 0,
                "episode": 0,
                "evals": 0,
                "last_eval": -1,
                "next_eval": 0,
                "next_checkpoint": cfg.checkpoint_every_frames,
            }
        self.open()

    # ------------------------------------------------------------------ checkpoints
    has_payload = True  # the replay, in the checkpoint folder the newest state does not name

    def restore_extra(self, state, payload: Path) -> None:
        cfg = self.cfg
        foreign = payload.parent != self.ckpt_dir  # resume_from: another run's replay
        settings: dict[str, Any] = (
            dict(
                frame_stack=cfg.frame_stack,
                nstep=cfg.nstep,
                gamma=cfg.gamma,
                seq_len=cfg.taco_k if cfg.aux == "taco" else 0,
            )
            if foreign
            else {}
        )
        # free the empty buffer before mapping/copying the saved one (gone already when a damaged
        # newest generation falls back to the previous one)
        if hasattr(self, "replay"):
            del self.replay
        try:
            # the device the run sampled on (its RNG stream differs between CPU and CUDA)
            replay = Replay.load(payload, device=state["replay_device"], **settings)
        except ReplayFormatError as e:
            raise ckpt.CheckpointError(f"its replay is damaged: {e}") from None
        if replay.total_added != state["replay_total"]:
            raise ckpt.CheckpointError(
                f"{payload} holds {replay.total_added} transitions, the state expects {state['replay_total']}"
            )
        if foreign:
            replay.detach_files()  # that run may write these files again later
        self.replay = replay

    def checkpoint_extra(self):
        return {"replay_total": self.replay.total_added, "replay_device": str(self.replay.device)}

    def write_payload(self, folder: Path) -> None:
        self.replay.save(folder)  # incremental when this replay last saved to or loaded from `folder`

    def payload_bytes(self, folder: Path) -> int:
        return self.replay.bytes_to_save(folder)

    # ------------------------------------------------------------------ the loop
    def close(self) -> None:
        if getattr(self, "stepper", None) is not None:
            self.stepper.close()  # a step in flight when the run stopped early
        if getattr(self, "train_workers", None) is not None:
            close_all(self.train_workers)  # no training-env worker outlives its run
            self.train_workers = []

    def loop(self) -> Path:
        if self.cfg.num_envs > 1:
            return vector_loop(self)
        cfg, c = self.cfg, self.counters
        self.bar = bar = progress_bar(cfg.frames, c["frame"], self.progress)
        next_log = c["frame"] + cfg.log_every_frames
        obs, episode_return, t0, f0 = None, 0.0, time.time(), c["frame"]
        if getattr(self, "stepper", None) is None:  # one worker per run: the env renders on one thread
            self.stepper = EnvStepper(self.env, overlap=env_overlap(cfg, self.device))
        stepper = self.stepper
        while c["frame"] < cfg.frames:
            if obs is None:  # an episode boundary: evaluate, checkpoint, reset
                self.at_boundary()
                obs, _ = stepper.call(self.env.reset, seed=self.reset_seed(c["episode"]))
                self.replay.add(obs[-3:], first=True)
                c["episode"] += 1
                episode_return = 0.0

            action = self.agent.act(obs, c["step"], eval_mode=False)
            stepper.start(action)  # with env_overlap the env steps while the learner updates
            if c["frame"] >= cfg.seed_frames and c["step"] % cfg.update_every_steps == 0:
                batch = self.replay.sample(cfg.batch_size).to(self.device, non_blocking=True)
                self.record(self.agent.update(batch, c["step"]), c["step"])
            obs, reward, terminated, truncated, info = stepper.result()
            self.replay.add(obs[-3:], action, float(reward), float(info["discount"]))
            frames = int(info.get("frames", cfg.action_repeat))  # fewer if the episode ended mid-repeat
            c["step"], c["frame"] = c["step"] + 1, c["frame"] + frames
            episode_return += float(reward)
            bar.update(frames)
            fps = (c["frame"] - f0) / max(time.time() - t0, 1e-9)
            if terminated or truncated:
                self.logger.scalars(c["frame"], {"train/episode_return": episode_return})
                bar.set_postfix(ret=f"{episode_return:.1f}", refresh=False)  # the bar's own frame/s is live
                obs = None
            if c["frame"] >= next_log:
                self.logger.log(
                    "train", c["frame"], c["step"], {**self.drain_metrics(), "episode": c["episode"], "fps": fps}
                )
                next_log += cfg.log_every_frames
        return self.finish(f0)

    def at_boundary(self) -> None:
        """Between episodes (between rounds with several envs): evaluate and checkpoint when due."""
        c = self.counters
        if c["frame"] >= c["next_eval"]:
            self.evaluate()
        if c["frame"] >= c["next_checkpoint"]:
            c["next_checkpoint"] += self.cfg.checkpoint_every_frames
            self.save_checkpoint()

    def reset_seed(self, episode: int) -> int:
        """The reset seed of the run's `episode`-th training episode (whichever env plays it)."""
        return self.cfg.seed * 1_000_003 + episode

    def finish(self, f0: int) -> Path:
        """After the budget: a last evaluation and checkpoint (none for a finished run rerun from `f0`)."""
        c = self.counters
        if c["last_eval"] != c["frame"]:
            self.evaluate()
        if c["frame"] != f0 or not (self.ckpt_dir / "state.pt").exists():  # a finished run rerun: nothing new
            self.save_checkpoint()
        return self.run_dir


def train(cfg: Config, progress: bool = True) -> Path:
    return Trainer(cfg, progress).train()
