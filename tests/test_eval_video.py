"""Eval videos are rendered by the eval env at video_size; what the agent sees is unchanged."""

from __future__ import annotations

import imageio.v2 as imageio
import numpy as np

from taco_rl.envs import make_env
from taco_rl.runners.core.config import resolve, run_directory
from taco_rl.runners.core.run import EVAL_SEED_OFFSET
from taco_rl.runners.online.train import Trainer

TINY = [
    "task=point_reach",
    "image_size=16",
    "hidden_dim=32",
    "batch_size=16",
    "seed_frames=100",
    "expl_steps=50",
    "eval_episodes=1",
    "frames=100",
    "eval_every_frames=100",
]


def test_eval_video_rendered_at_video_size(tmp_path):
    cfg = resolve([*TINY, "save_video=true", "video_size=64", f"run_dir={tmp_path}"])
    trainer = Trainer(cfg, progress=False)
    assert trainer.eval_env.observation_space.shape == (9, 16, 16)  # the agent's view
    trainer.train()
    frames = imageio.mimread(tmp_path / "videos" / "eval_000000000.mp4")
    assert len(frames) == 51  # the reset frame and one per step of a 50-step episode
    assert frames[0].shape == (64, 64, 3)
    # the first frame is the eval env's render after its first reset (mp4 is lossy: close, not equal)
    env = make_env("point_reach", action_repeat=1, image_size=16, render_mode="rgb_array", render_size=64)
    env.reset(seed=cfg.seed + EVAL_SEED_OFFSET)
    expected = env.render().astype(float)
    assert expected.shape == (64, 64, 3)
    assert np.abs(frames[0].astype(float) - expected).mean() < 8
    other = make_env("point_reach", action_repeat=1, image_size=16, render_mode="rgb_array", render_size=64)
    other.reset(seed=cfg.seed + EVAL_SEED_OFFSET + 1)  # another start: the check can tell them apart
    assert (
        np.abs(frames[0].astype(float) - other.render().astype(float)).mean()
        > 2 * np.abs(frames[0].astype(float) - expected).mean()
    )


def test_eval_video_plays_at_the_envs_rate(tmp_path):
    # point_reach draws 25 frames per second of its own time; at action repeat 2 a video frame (one per
    # agent step) stands for 2 of them: 12.5 fps (DMC: 1 / (control timestep x repeat), test_envs.py)
    cfg = resolve([*TINY, "action_repeat=2", "frames=100", f"run_dir={tmp_path}"])
    trainer = Trainer(cfg, progress=False)
    assert trainer.eval_env.metadata["render_fps"] == 12.5
    trainer.train()
    reader = imageio.get_reader(tmp_path / "videos" / "eval_000000000.mp4")
    assert reader.get_meta_data()["fps"] == 12.5
    assert reader.count_frames() == 26  # the reset frame and one per step of a 25-step episode
    reader.close()


def test_video_size_does_not_change_the_run():
    a = resolve([*TINY, "video_size=64"])
    assert run_directory(a) == run_directory(resolve(TINY))  # same run, only the video differs
