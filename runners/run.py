"""What every run shares, online or offline: the run directory, seeding, the device, the learner
a config describes, the evaluation env and protocol, logs, videos, the progress bar and the
checkpoint of learner, optimizers, RNG and counters (atomic; resumed exactly).

A run is keyed on one counter, `clock`: env frames online (runners/train.py), learner updates
offline (runners/offline.py). Subclasses add their data (the online replay and env, the offline
dataset) through `checkpoint_extra` / `restore_extra`, and their loop.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from envs import make_env

from . import checkpoint as ckpt
from .config import Config, config_hash, run_directory, to_yaml
from .logger import Logger, write_video

EVAL_SEED_OFFSET = 10_000


class RunDirError(RuntimeError):
    pass


def resolve_device(spec: str) -> torch.device:
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(spec)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device={spec!r} but CUDA is not available here; use device=cpu or device=auto")
    return device


def build_agent(cfg: Config, obs_shape: tuple[int, int, int], action_dim: int, device: torch.device):
    """The learner a config describes (shared by train, offline and bench)."""
    from agents import AGENTS, OFFLINE_AGENTS

    cls = {**AGENTS, **OFFLINE_AGENTS}[cfg.agent]
    kwargs: dict[str, Any] = dict(
        device=device, lr=cfg.lr, feature_dim=cfg.feature_dim, hidden_dim=cfg.hidden_dim,
        critic_tau=cfg.critic_tau, expl_steps=cfg.expl_steps, precision=cfg.precision, aux=cfg.aux,
        taco_k=cfg.taco_k, taco_weight=cfg.taco_weight, curl_weight=cfg.curl_weight,
        reward_weight=cfg.reward_weight, latent_dim=cfg.latent_action_dim,
        action_encoder=cfg.action_encoder, latent_critic=cfg.latent_critic, optimizer=cfg.optimizer)
    kwargs.update({key: getattr(cfg, key) for key in cls.options})
    return cls(obs_shape, action_dim, **kwargs)


def env_kwargs(cfg: Config) -> dict[str, Any]:
    return dict(action_repeat=cfg.action_repeat, frame_stack=cfg.frame_stack, image_size=cfg.image_size,
                fast_render=cfg.fast_render)


def prepare_run_dir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write_test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise RunDirError(f"run directory {path} is not writable ({e.strerror}); "
                          "pass root=<writable folder> or run_dir=<path>") from None


class Run:
    clock = "frame"  # the counter evaluations, logs, videos and checkpoints are keyed on
    step_key = "step"  # the counter passed to the learner as its step
    eval_every = 0  # in `clock` units

    def __init__(self, cfg: Config, progress: bool = True) -> None:
        self.cfg, self.progress = cfg, progress
        self.run_dir = run_directory(cfg)
        prepare_run_dir(self.run_dir)
        torch.manual_seed(cfg.seed)
        self.device = resolve_device(cfg.device)
        self.bar = None
        self.ckpt_dir = self.run_dir / "checkpoint"
        self.counters: dict[str, int] = {}

    def make_eval_env(self):
        cfg = self.cfg  # videos are rendered by the eval env at video_size; observations are unchanged
        video = dict(render_mode="rgb_array", render_size=cfg.video_size) if cfg.save_video else {}
        self.eval_env = make_env(cfg.task, cfg.seed + EVAL_SEED_OFFSET, **env_kwargs(cfg), **video)
        return self.eval_env

    def open(self) -> bool:
        """After the learner and data exist: resume from the checkpoint if there is one, write the
        resolved config, open the logs. Returns whether the run resumed."""
        resumed = self._maybe_resume()
        (self.run_dir / "config.yaml").write_text(to_yaml(self.cfg))
        self.logger = Logger(self.run_dir, resume_frame=self.counters[self.clock], axis=self.clock)
        if resumed:
            print(f"resuming {self.run_dir} at {self.clock} {self.counters[self.clock]}", flush=True)
        return resumed

    # ------------------------------------------------------------------ checkpoints
    def checkpoint_extra(self) -> dict[str, Any]:
        """What the subclass stores beside the learner (written before state.pt)."""
        return {}

    def check_resume(self, state: dict[str, Any]) -> None:
        """Refuse a checkpoint the subclass cannot continue (checked before anything is loaded)."""

    def restore_extra(self, state: dict[str, Any]) -> None:
        """Restore what `checkpoint_extra` stored."""

    def _maybe_resume(self) -> bool:
        state_path = self.ckpt_dir / "state.pt"
        if not state_path.exists():
            return False
        state = ckpt.load(state_path)
        self.check_resume(state)
        if state.get("config_hash") != config_hash(self.cfg):
            raise ckpt.CheckpointError(f"{state_path} was written by a different configuration "
                                       f"(hash {state.get('config_hash')} vs {config_hash(self.cfg)}); "
                                       "pass a new run_dir= to start a fresh run")
        self.agent.load_state_dict(state["agent"])
        ckpt.set_rng_state(state["rng"])
        self.counters = dict(state["counters"])
        self.restore_extra(state)
        return True

    def save_checkpoint(self) -> None:
        """Subclass data first, then state.pt atomically: a kill at any moment leaves the previous
        checkpoint whole."""
        self.ckpt_dir.mkdir(exist_ok=True)
        extra = self.checkpoint_extra()
        state = {"format": 1, "config_hash": config_hash(self.cfg), "agent": self.agent.state_dict(),
                 "rng": ckpt.rng_state(), "counters": dict(self.counters), **extra}
        ckpt.save_atomic(state, self.ckpt_dir / "state.pt")

    # ------------------------------------------------------------------ evaluation
    def log_row(self, kind: str, metrics: dict[str, Any]) -> dict[str, float]:
        c = self.counters
        return self.logger.log(kind, c["frame"], c["step"], metrics)

    def where(self) -> str:
        return f"frame {self.counters['frame']} | step {self.counters['step']}"

    def eval_metrics(self, returns: list[float], lengths: list[int]) -> dict[str, float]:
        return {"episode_return": float(np.mean(returns)), "return_std": float(np.std(returns)),
                "episode_length": float(np.mean(lengths)), "episodes": len(returns)}

    def evaluate(self) -> dict[str, float]:
        c, cfg = self.counters, self.cfg
        self.agent.train(False)
        if self.bar is not None and not self.bar.disable:
            self.bar.set_description_str(f"evaluating ({cfg.eval_episodes} episodes)", refresh=True)
        returns, lengths, video = [], [], []
        for i in range(cfg.eval_episodes):
            obs, _ = self.eval_env.reset(seed=cfg.seed + EVAL_SEED_OFFSET + c["evals"] * cfg.eval_episodes + i)
            done, ret, length = False, 0.0, 0
            while not done:
                if i == 0 and cfg.save_video:
                    video.append(self.eval_env.render())
                action = self.agent.act(obs, c[self.step_key], True)
                obs, reward, terminated, truncated, _ = self.eval_env.step(action)
                ret, length, done = ret + float(reward), length + 1, terminated or truncated
            returns.append(ret)
            lengths.append(length)
        self.agent.train(True)
        if self.bar is not None:
            self.bar.set_description_str("train", refresh=False)
        if video:
            video.append(self.eval_env.render())
            write_video(self.run_dir / "videos" / f"eval_{c[self.clock]:09d}.mp4", video)
        c["evals"] += 1
        c["last_eval"] = c[self.clock]
        c["next_eval"] = (c[self.clock] // self.eval_every + 1) * self.eval_every
        row = self.log_row("eval", self.eval_metrics(returns, lengths))
        say(self.bar, f"eval | {self.where()} | return {row['episode_return']:.1f}"
                      f" +- {row['return_std']:.1f}{self.score_text(row)} over {len(returns)} episodes")
        return row

    def score_text(self, row: dict[str, float]) -> str:
        return ""


def progress_bar(total: int, initial: int, enabled: bool, unit: str = "frame"):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit=unit, disable=not enabled, dynamic_ncols=True,
                smoothing=0.05, mininterval=1.0)


def say(bar, text: str) -> None:
    if bar is None or bar.disable:
        print(text, flush=True)
    else:
        bar.write(text)
