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

from agents import AGENTS
from envs import make_env

from . import checkpoint as ckpt
from .config import Config, config_hash, run_directory, to_yaml
from .logger import Logger, mean_metrics, write_video
from .replay import Replay

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
    """The learner a config describes (shared by train and bench)."""
    kwargs: dict[str, Any] = dict(
        device=device, lr=cfg.lr, feature_dim=cfg.feature_dim, hidden_dim=cfg.hidden_dim,
        critic_tau=cfg.critic_tau, expl_steps=cfg.expl_steps, precision=cfg.precision, aux=cfg.aux,
        taco_k=cfg.taco_k, taco_weight=cfg.taco_weight, curl_weight=cfg.curl_weight,
        reward_weight=cfg.reward_weight, latent_dim=cfg.latent_action_dim,
        action_encoder=cfg.action_encoder, latent_critic=cfg.latent_critic, optimizer=cfg.optimizer)
    if cfg.agent == "drqv2":
        kwargs.update(std_schedule=cfg.std_schedule, std_clip=cfg.std_clip)
    elif cfg.agent == "sac":
        kwargs.update(init_alpha=cfg.init_alpha)
    return AGENTS[cfg.agent](obs_shape, action_dim, **kwargs)


def replay_device(cfg: Config, device: torch.device, frame_shape: tuple[int, int, int]) -> torch.device:
    """The learner's device when the replay fits in half of its free memory, else the CPU."""
    if cfg.replay_device == "cpu" or device.type != "cuda":
        return torch.device("cpu")
    need = cfg.capacity * (int(np.prod(frame_shape)) + 64)
    free, _ = torch.cuda.mem_get_info(device)
    return device if need < free // 2 else torch.device("cpu")


def make_replay(cfg: Config, frame_shape: tuple[int, int, int], action_dim: int, device: torch.device) -> Replay:
    return Replay(cfg.capacity, frame_shape, action_dim, frame_stack=cfg.frame_stack, nstep=cfg.nstep,
                  gamma=cfg.gamma, seq_len=cfg.taco_k if cfg.aux == "taco" else 0, device=device)


def prepare_run_dir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write_test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise RunDirError(f"run directory {path} is not writable ({e.strerror}); "
                          "pass root=<writable folder> or run_dir=<path>") from None


class Trainer:
    def __init__(self, cfg: Config, progress: bool = True) -> None:
        self.cfg, self.progress = cfg, progress
        self.run_dir = run_directory(cfg)
        prepare_run_dir(self.run_dir)
        torch.manual_seed(cfg.seed)
        self.device = resolve_device(cfg.device)
        env_kw = dict(action_repeat=cfg.action_repeat, frame_stack=cfg.frame_stack,
                      image_size=cfg.image_size, fast_render=cfg.fast_render)
        self.env = make_env(cfg.task, cfg.seed, **env_kw)
        self.eval_env = make_env(cfg.task, cfg.seed + EVAL_SEED_OFFSET, **env_kw)
        obs_shape = self.env.observation_space.shape
        self.frame_shape = (3, *obs_shape[1:])
        action_dim = self.env.action_space.shape[0]
        self.agent = build_agent(cfg, obs_shape, action_dim, self.device)
        self.replay = make_replay(cfg, self.frame_shape, action_dim,
                                  replay_device(cfg, self.device, self.frame_shape))
        self.bar = None
        self.counters = {"step": 0, "frame": 0, "episode": 0, "evals": 0, "last_eval": -1,
                         "next_eval": 0, "next_checkpoint": cfg.checkpoint_every_frames}
        self.ckpt_dir = self.run_dir / "checkpoint"
        self._replay_dir = "replay_b"  # the first checkpoint writes replay_a
        resumed = self._maybe_resume()
        (self.run_dir / "config.yaml").write_text(to_yaml(cfg))
        self.logger = Logger(self.run_dir, resume_frame=self.counters["frame"])
        if resumed:
            print(f"resuming {self.run_dir} at frame {self.counters['frame']}", flush=True)

    # ------------------------------------------------------------------ checkpoints
    def _maybe_resume(self) -> bool:
        state_path = self.ckpt_dir / "state.pt"
        if not state_path.exists():
            return False
        state = ckpt.load(state_path)
        if state.get("config_hash") != config_hash(self.cfg):
            raise ckpt.CheckpointError(f"{state_path} was written by a different configuration "
                                       f"(hash {state.get('config_hash')} vs {config_hash(self.cfg)}); "
                                       "pass a new run_dir= to start a fresh run")
        self.agent.load_state_dict(state["agent"])
        ckpt.set_rng_state(state["rng"])
        self.counters = dict(state["counters"])
        self.replay = None  # free the empty buffer before mapping/copying the saved one
        # the device the run sampled on (its RNG stream differs between CPU and CUDA)
        self.replay = Replay.load(self.ckpt_dir / state["replay_dir"], device=state["replay_device"])
        if self.replay.total_added != state["replay_total"]:
            raise ckpt.CheckpointError(f"{self.ckpt_dir / state['replay_dir']} holds {self.replay.total_added} "
                                       f"transitions, state.pt expects {state['replay_total']}")
        self._replay_dir = state["replay_dir"]
        return True

    def save_checkpoint(self) -> None:
        """Replay into the folder state.pt does not point at, then state.pt atomically: a kill at any
        moment leaves the previous checkpoint whole."""
        self.ckpt_dir.mkdir(exist_ok=True)
        self._replay_dir = "replay_b" if self._replay_dir == "replay_a" else "replay_a"
        self.replay.save(self.ckpt_dir / self._replay_dir)
        state = {"format": 1, "config_hash": config_hash(self.cfg), "agent": self.agent.state_dict(),
                 "rng": ckpt.rng_state(), "counters": dict(self.counters), "replay_dir": self._replay_dir,
                 "replay_total": self.replay.total_added, "replay_device": str(self.replay.device)}
        ckpt.save_atomic(state, self.ckpt_dir / "state.pt")

    # ------------------------------------------------------------------ evaluation
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
                    video.append(obs[-3:])
                obs, reward, terminated, truncated, _ = self.eval_env.step(self.agent.act(obs, c["step"], True))
                ret, length, done = ret + float(reward), length + 1, terminated or truncated
            returns.append(ret)
            lengths.append(length)
        self.agent.train(True)
        if self.bar is not None:
            self.bar.set_description_str("train", refresh=False)
        if video:
            video.append(obs[-3:])
            write_video(self.run_dir / "videos" / f"eval_{c['frame']:09d}.mp4", video)
        c["evals"] += 1
        c["last_eval"] = c["frame"]
        c["next_eval"] = (c["frame"] // cfg.eval_every_frames + 1) * cfg.eval_every_frames
        row = self.logger.log("eval", c["frame"], c["step"], {
            "episode_return": float(np.mean(returns)), "return_std": float(np.std(returns)),
            "episode_length": float(np.mean(lengths)), "episodes": len(returns)})
        _say(self.bar, f"eval | frame {c['frame']} | step {c['step']} | return {row['episode_return']:.1f}"
                       f" +- {row['return_std']:.1f} over {len(returns)} episodes")
        return row

    # ------------------------------------------------------------------ the loop
    def train(self) -> Path:
        cfg, c = self.cfg, self.counters
        self.bar = bar = _progress(cfg.frames, c["frame"], self.progress)
        history: list[dict[str, torch.Tensor]] = []
        next_log = c["frame"] + cfg.log_every_frames
        obs, episode_return, t0, f0 = None, 0.0, time.time(), c["frame"]
        while c["frame"] < cfg.frames:
            if obs is None:  # an episode boundary: evaluate, checkpoint, reset
                if c["frame"] >= c["next_eval"]:
                    self.evaluate()
                if c["frame"] >= c["next_checkpoint"]:
                    c["next_checkpoint"] += cfg.checkpoint_every_frames
                    self.save_checkpoint()
                obs, _ = self.env.reset(seed=cfg.seed * 1_000_003 + c["episode"])
                self.replay.add(obs[-3:], first=True)
                c["episode"] += 1
                episode_return = 0.0

            action = self.agent.act(obs, c["step"], eval_mode=False)
            if c["frame"] >= cfg.seed_frames and c["step"] % cfg.update_every_steps == 0:
                batch = self.replay.sample(cfg.batch_size).to(self.device, non_blocking=True)
                history.append(self.agent.update(batch, c["step"]))
            obs, reward, terminated, truncated, info = self.env.step(action)
            self.replay.add(obs[-3:], action, float(reward), float(info["discount"]))
            frames = int(info.get("frames", cfg.action_repeat))  # fewer if the episode ended mid-repeat
            c["step"], c["frame"] = c["step"] + 1, c["frame"] + frames
            episode_return += float(reward)
            bar.update(frames)
            fps = (c["frame"] - f0) / max(time.time() - t0, 1e-9)
            if terminated or truncated:
                if self.logger.tb is not None:
                    self.logger.tb.add_scalar("train/episode_return", episode_return, c["frame"])
                bar.set_postfix(ret=f"{episode_return:.1f}", fps=f"{fps:.0f}", refresh=False)
                obs = None
            if c["frame"] >= next_log:
                self.logger.log("train", c["frame"], c["step"], {
                    **mean_metrics(history), "episode": c["episode"], "fps": fps})
                history, next_log = [], next_log + cfg.log_every_frames
        if c["last_eval"] != c["frame"]:
            self.evaluate()
        if c["frame"] != f0 or not (self.ckpt_dir / "state.pt").exists():  # a finished run rerun: nothing new
            self.save_checkpoint()
        bar.close()
        self.logger.close()
        return self.run_dir


def _progress(total: int, initial: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="frame", disable=not enabled, dynamic_ncols=True,
                smoothing=0.05, mininterval=1.0)


def _say(bar, text: str) -> None:
    if bar is None or bar.disable:
        print(text, flush=True)
    else:
        bar.write(text)


def train(cfg: Config, progress: bool = True) -> Path:
    return Trainer(cfg, progress).train()
