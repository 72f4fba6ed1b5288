"""Tests for the envs package: task table, wrappers, point_reach, dm_control tasks.

MuJoCo tests render for real (EGL on this machine); they skip only when
probe_render_backend() finds no working backend.  Whole file: well under 60 s.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from taco_rl import envs
from taco_rl.envs.point import RANDOM_RETURN, SCRIPTED_RETURN, PointReach, measure_returns

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def gl_backend() -> str:
    try:
        return envs.probe_render_backend()
    except envs.RenderBackendError as err:
        pytest.skip(f"no MuJoCo render backend: {err}")


def rollout(env: gymnasium.Env, actions: np.ndarray, seed: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Observations (reset + one per action) and rewards of one rollout."""
    obs, _ = env.reset(seed=seed)
    frames, rewards = [obs], []
    for action in actions:
        obs, reward, terminated, truncated, _ = env.step(action)
        frames.append(obs)
        rewards.append(reward)
        assert not terminated
    return np.stack(frames), np.array(rewards)


# --- task table and errors -------------------------------------------------


def test_task_table() -> None:
    expected = {
        "quadruped_run",
        "quadruped_walk",
        "hopper_hop",
        "walker_run",
        "cheetah_run",
        "finger_turn_hard",
        "acrobot_swingup",
        "reacher_hard",
        "reach_duplo",
        "cartpole_balance",
        "cartpole_swingup",
        "reacher_easy",
        "walker_walk",
        "cup_catch",
        "finger_spin",
        "point_reach",
    }
    assert expected <= set(envs.TASKS) and len(envs.TASKS) == 64  # tests/test_tasks.py checks all against dm_control
    for name in envs.TASKS:
        spec = envs.get_task_spec(name)
        if spec.kind == "suite":
            assert spec.camera_id == (2 if name.startswith("quadruped_") else 0)
    assert envs.get_task_spec("quadruped_run").camera_id == 2
    cup = envs.get_task_spec("cup_catch")
    assert (cup.domain, cup.task) == ("ball_in_cup", "catch")
    duplo = envs.get_task_spec("reach_duplo")
    assert (duplo.kind, duplo.task, duplo.pixels_key) == ("manipulation", "reach_duplo_vision", "front_close")


def test_import_does_not_load_mujoco() -> None:
    code = "import sys, envs; print(any(m.split('.')[0] in ('mujoco', 'dm_control') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_unknown_task_suggests_close_names() -> None:
    with pytest.raises(envs.UnknownTaskError) as info:
        envs.make_env("cheetah_rn", 0)
    message = str(info.value)
    assert message.startswith("unknown task 'cheetah_rn'")
    assert "cheetah_run" in message and "`taco tasks`" in message
    assert isinstance(info.value, ValueError)


def test_missing_backend_subprocess() -> None:
    code = textwrap.dedent("""
        from taco_rl import envs
        try:
            envs.make_env("cheetah_run", 0)
        except envs.RenderBackendError as err:
            print(err)
        else:
            print("NO ERROR")
    """)
    env = dict(os.environ, MUJOCO_GL="nonexistent_backend")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "NO ERROR" not in out.stdout
    assert "MUJOCO_GL=egl" in out.stdout and "osmesa" in out.stdout
    assert "nonexistent_backend" in out.stdout  # says what was tried and how it failed


def test_missing_backend_candidates(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MUJOCO_GL", raising=False)
    monkeypatch.setattr(envs.render, "_cached_backend", None)
    monkeypatch.setattr(envs.render, "CANDIDATE_BACKENDS", ("no_such_gl_a", "no_such_gl_b"))
    monkeypatch.delitem(sys.modules, "dm_control._render", raising=False)
    with pytest.raises(envs.RenderBackendError) as info:
        envs.probe_render_backend()
    message = str(info.value)
    assert "MUJOCO_GL=egl" in message and "MUJOCO_GL=osmesa" in message
    assert "libegl1" in message and "libosmesa6" in message
    assert "no_such_gl_a" in message and "no_such_gl_b" in message
    assert "MUJOCO_GL" not in os.environ  # nothing was set on failure


# --- wrappers and point_reach ------------------------------------------------


def test_point_reach_spaces_and_gymnasium_make() -> None:
    env = gymnasium.make("taco/point_reach-v0", seed=0, action_repeat=1, frame_stack=3, image_size=32)
    assert env.observation_space == gymnasium.spaces.Box(0, 255, (9, 32, 32), np.uint8)
    assert env.action_space == gymnasium.spaces.Box(-1, 1, (2,), np.float32)
    obs, info = env.reset()
    assert obs.shape == (9, 32, 32) and obs.dtype == np.uint8 and info["discount"] == 1.0
    # reset fills the stack with the first frame, oldest first
    assert (obs[:3] == obs[3:6]).all() and (obs[3:6] == obs[6:]).all()
    obs2, reward, terminated, truncated, info = env.step(np.ones(2, np.float32))
    assert (obs2[:6] == obs[3:]).all() and not (obs2[6:] == obs[6:]).all()
    assert 0.0 <= reward <= 1.0 and not terminated and not truncated and info["discount"] == 1.0
    assert all(envs.gym_id(t) in gymnasium.registry for t in envs.TASKS)


def test_point_reach_env_checker() -> None:
    check_env(gymnasium.make("taco/point_reach-v0", seed=0, image_size=24).unwrapped)


def test_point_reach_frames_show_point_and_target() -> None:
    env = PointReach(seed=0, image_size=24)
    env.reset()
    env.position = np.array([-1.0, 1.0])  # top-left corner
    frame = env.render_frame()
    red = (frame[0] == 255) & (frame[1] == 0)
    green = (frame[1] == 255) & (frame[0] == 0)
    assert red.sum() >= 4 and green.sum() >= 4
    rows, cols = np.nonzero(red)
    assert rows.max() < 6 and cols.max() < 6
    rows, cols = np.nonzero(green)
    assert abs(rows.mean() - 11.5) <= 1 and abs(cols.mean() - 11.5) <= 1


def test_point_reach_seeding() -> None:
    actions = np.random.default_rng(1).uniform(-1, 1, (10, 2)).astype(np.float32)
    a, ra = rollout(envs.make_env("point_reach", 5, image_size=24), actions)
    b, rb = rollout(envs.make_env("point_reach", 5, image_size=24), actions)
    c, _ = rollout(envs.make_env("point_reach", 6, image_size=24), actions)
    d, rd = rollout(envs.make_env("point_reach", 0, image_size=24), actions, seed=5)
    assert (a == b).all() and (ra == rb).all()
    assert (a == d).all() and (ra == rd).all()
    assert not (a[0] == c[0]).all()


def test_action_repeat_sums_and_stops_at_episode_end() -> None:
    env = envs.make_env("point_reach", 0, action_repeat=3, frame_stack=2, image_size=24)
    env.reset()
    steps, frames = 0, 0
    while True:
        _, reward, terminated, truncated, info = env.step(np.zeros(2, np.float32))
        steps, frames = steps + 1, frames + info["frames"]
        assert not terminated and info["discount"] == 1.0 and 0.0 <= reward <= 3.0
        if truncated:
            break
    assert (steps, frames, info["frames"]) == (17, 50, 2)  # 16 * 3 + 2


def test_deferred_and_eager_repeat_agree() -> None:
    """ActionRepeat renders only the last frame of a repeat when it can; same result."""

    class Eager(gymnasium.Wrapper):  # hides step_no_frame/frame from ActionRepeat
        pass

    actions = np.random.default_rng(2).uniform(-1, 1, (30, 2)).astype(np.float32)
    lazy = envs.make_env("point_reach", 3, action_repeat=2, image_size=24)
    eager = envs.FrameStack(envs.ActionRepeat(Eager(PointReach(seed=3, image_size=24)), 2), 3)
    assert lazy.env._deferred is not None and eager.env._deferred is None
    a, ra = rollout(lazy, actions[:24])
    b, rb = rollout(eager, actions[:24])
    assert (a == b).all() and np.allclose(ra, rb)


def test_point_reach_returns_match_documented() -> None:
    random_return, scripted_return = measure_returns(episodes=200, seed=0)
    assert abs(random_return - RANDOM_RETURN) < 0.06 and abs(scripted_return - SCRIPTED_RETURN) < 0.06
    # a fresh 20-episode sample agrees within ~3 standard errors
    random_return, scripted_return = measure_returns(episodes=20, seed=1234)
    assert abs(random_return - RANDOM_RETURN) < 4.5
    assert abs(scripted_return - SCRIPTED_RETURN) < 1.0
    assert scripted_return > random_return + 25


# --- dm_control tasks ----------------------------------------------------------


def test_rescale_action() -> None:
    low = np.array([-0.63, -0.84, -5.0])
    high = np.array([0.63, 0.84, 5.0])
    assert np.allclose(envs.rescale_action(-np.ones(3), low, high), low)
    assert np.allclose(envs.rescale_action(np.ones(3), low, high), high)
    assert np.allclose(envs.rescale_action(np.zeros(3), low, high), 0.0)
    assert np.allclose(envs.rescale_action(np.full(3, 7.0, np.float32), low, high), high)  # clipped
    assert envs.rescale_action(np.zeros(3, np.float32), low, high, np.float64).dtype == np.float64


def test_cheetah_pixels_seeding_and_reward_sum(gl_backend: str) -> None:
    actions = np.random.default_rng(0).uniform(-1, 1, (6, 6)).astype(np.float32)
    env = envs.make_env("cheetah_run", 1, fast_render=True)
    assert env.observation_space == gymnasium.spaces.Box(0, 255, (9, 84, 84), np.uint8)
    assert env.action_space == gymnasium.spaces.Box(-1, 1, (6,), np.float32)
    a, ra = rollout(env, actions)
    assert a.dtype == np.uint8 and a.shape == (7, 9, 84, 84) and a.std() > 10
    b, rb = rollout(envs.make_env("cheetah_run", 1, fast_render=True), actions)
    assert (a == b).all() and (ra == rb).all()
    c, _ = rollout(env, actions, seed=2)
    assert not (a[0] == c[0]).all()
    d, rd = rollout(env, actions, seed=1)  # reseeding reproduces the seed-1 rollout
    assert (a == d).all() and (ra == rd).all()

    single = envs.make_env("cheetah_run", 1, action_repeat=1, fast_render=True)
    single.reset()
    for action, reward, stacked in zip(actions, ra, a[1:], strict=True):
        r1 = single.step(action)[1]
        obs, r2 = single.step(action)[:2]
        assert reward == pytest.approx(r1 + r2, abs=1e-12)
        assert (obs[6:] == stacked[6:]).all()


def test_cheetah_gymnasium_make_and_env_checker(gl_backend: str) -> None:
    env = gymnasium.make("taco/cheetah_run-v0", seed=0, fast_render=True, image_size=24)
    assert env.observation_space.shape == (9, 24, 24)
    check_env(env.unwrapped)


def test_cheetah_time_limit_is_truncation(gl_backend: str) -> None:
    env = envs.make_env("cheetah_run", 0, fast_render=True, image_size=24)
    env.reset()
    zero = np.zeros(6, np.float32)
    for step in range(1, 501):
        _, _, terminated, truncated, info = env.step(zero)
        assert not terminated and info["discount"] == 1.0 and info["frames"] == 2
        assert truncated == (step == 500)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(zero)


def test_fast_render_sets_quality_before_first_render(gl_backend: str) -> None:
    faithful = envs.make_env("cheetah_run", 0)
    fast = envs.make_env("cheetah_run", 0, fast_render=True)
    q_faithful = faithful.unwrapped.physics.model.vis.quality
    q_fast = fast.unwrapped.physics.model.vis.quality
    assert q_faithful.shadowsize > 0 and q_faithful.offsamples > 0
    assert q_fast.shadowsize == 0 and q_fast.offsamples == 0
    assert fast.unwrapped.physics._contexts is None  # render context not created yet
    obs_faithful, _ = faithful.reset()
    obs_fast, _ = fast.reset()
    assert obs_fast.shape == obs_faithful.shape and obs_fast.dtype == obs_faithful.dtype
    assert not (obs_fast == obs_faithful).all()  # shadows/antialiasing really are gone
    assert np.abs(obs_fast.astype(int) - obs_faithful.astype(int)).mean() < 20  # same scene


def test_every_suite_task_loads_and_steps(gl_backend: str) -> None:
    # the references' tasks; tests/test_tasks.py builds and steps every other suite task
    for task in envs.REFERENCE_TASKS:
        if envs.get_task_spec(task).kind != "suite":
            continue
        env = envs.make_env(task, 0, frame_stack=1, image_size=24, fast_render=True)
        obs, _ = env.reset()
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        assert obs.shape == (3, 24, 24) and obs.std() > 1, task
        assert np.isfinite(reward) and not (terminated or truncated) and info["discount"] == 1.0, task
        env.close()


def test_quadruped_renders_from_camera_2(gl_backend: str) -> None:
    env = envs.make_env("quadruped_walk", 0, frame_stack=1, image_size=32, fast_render=True)
    obs, _ = env.reset()
    physics = env.unwrapped.physics
    assert (obs == physics.render(32, 32, camera_id=2).transpose(2, 0, 1)).all()
    assert not (obs == physics.render(32, 32, camera_id=0).transpose(2, 0, 1)).all()


def test_reach_duplo(gl_backend: str) -> None:
    env = envs.make_env("reach_duplo", 0, fast_render=True)
    assert env.action_space == gymnasium.spaces.Box(-1, 1, (9,), np.float32)
    base = env.unwrapped
    spec = base._env.action_spec()
    assert not np.allclose(spec.maximum, 1.0)  # joint limits +-0.63/0.84, fingers +-5
    np.testing.assert_allclose(envs.rescale_action(-np.ones(9), spec.minimum, spec.maximum, spec.dtype), spec.minimum)
    np.testing.assert_allclose(envs.rescale_action(np.ones(9), spec.minimum, spec.maximum, spec.dtype), spec.maximum)
    obs, _ = env.reset()
    assert obs.shape == (9, 84, 84) and obs.dtype == np.uint8 and obs.std() > 5
    # MJCF-level quality settings survive the composer's per-reset recompile
    assert base.physics.model.vis.quality.shadowsize == 0
    obs, reward, terminated, truncated, info = env.step(np.ones(9, np.float32))
    assert obs.shape == (9, 84, 84) and np.isfinite(reward) and info["discount"] == 1.0
    assert not terminated and not truncated
    with pytest.raises(ValueError, match="84"):
        envs.make_env("reach_duplo", 0, image_size=64)


# --- gymnasium conventions: make with no kwargs, reset seeding, render, close, checkers ---------


def test_gym_make_without_arguments_seeds_through_reset() -> None:
    env = gymnasium.make("taco/point_reach-v0")  # what SB3's make_vec_env and rl-zoo call
    assert env.observation_space.shape == (9, 84, 84)
    actions = np.random.default_rng(3).uniform(-1, 1, (8, 2)).astype(np.float32)
    a, ra = rollout(env, actions, seed=7)
    b, rb = rollout(env, actions, seed=7)
    c, rc = rollout(envs.make_env("point_reach", 7), actions)  # seed= at construction still works
    assert (a == b).all() and (a == c).all() and (ra == rb).all() and (ra == rc).all()
    assert not (rollout(env, actions, seed=8)[0][0] == a[0]).all()


def test_point_reach_render_rgb_array_does_not_touch_observations() -> None:
    actions = np.random.default_rng(4).uniform(-1, 1, (12, 2)).astype(np.float32)
    plain = envs.make_env("point_reach", 2, image_size=32)
    env = gymnasium.make("taco/point_reach-v0", seed=2, image_size=32, render_mode="rgb_array", render_size=96)
    assert env.render_mode == "rgb_array" and env.metadata["render_fps"] == 25 / 2  # one frame per agent step
    obs, _ = env.reset()
    expected, _ = plain.reset()
    for action in actions:
        frame = env.render()
        assert frame.shape == (96, 96, 3) and frame.dtype == np.uint8
        base = env.unwrapped
        # the same state drawn larger: red point and green target where the observation has them
        assert (frame[..., 0] == 255).sum() == 10 * 10 and (frame[..., 1] == 255).sum() >= 10 * 10 - 100
        assert (frame.transpose(2, 0, 1) == base.render_frame(96)).all()
        assert (obs == expected).all()
        obs = env.step(action)[0]
        expected = plain.step(action)[0]
    assert env.unwrapped.render_rgb(40).shape == (40, 40, 3)
    with pytest.warns(UserWarning, match="rgb_array"):
        assert plain.render() is None
    with pytest.raises(ValueError, match="render_mode"):
        envs.make_env("point_reach", render_mode="human")
    with pytest.raises(ValueError, match="render_size"):
        envs.make_env("point_reach", render_mode="rgb_array", render_size=0)


def _check_registered(task: str, **kwargs) -> None:
    """gymnasium's and SB3's env checkers and make_vec_env(n_envs=2) on one registered id."""
    from stable_baselines3.common.env_checker import check_env as sb3_check_env
    from stable_baselines3.common.env_util import make_vec_env

    env_id = envs.gym_id(task)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*different from the unwrapped version.*")
        warnings.filterwarnings("ignore", message=".*minimal resolution.*NatureCNN|.*minimal resolution.*CnnPolicy")
        env = gymnasium.make(env_id, render_mode="rgb_array", render_size=48, **kwargs)
        check_env(env)  # the whole wrapper chain (determinism of the stack too), render included
        sb3_check_env(env)
        env.close()
        env.close()  # idempotent
    venv = make_vec_env(env_id, n_envs=2, seed=0, env_kwargs=dict(kwargs, render_mode="rgb_array", render_size=48))
    obs = venv.reset()
    assert obs.shape == (2, *venv.observation_space.shape) and obs.dtype == np.uint8
    assert not (obs[0] == obs[1]).all()  # seeds 0 and 1
    obs, reward, done, _ = venv.step(np.stack([venv.action_space.sample() for _ in range(2)]))
    assert obs.shape[0] == 2 and reward.shape == (2,)
    assert venv.render().shape[2] == 3  # SB3 tiles the envs' rgb frames
    venv.close()


def test_point_reach_checkers_and_make_vec_env() -> None:
    _check_registered("point_reach")
    check_env(gymnasium.make("taco/point_reach-v0").unwrapped)  # no render_mode
    _check_registered("point_reach", image_size=32)


# the MuJoCo tasks named before every dm_control task had a name, a hard one and a second manipulation env
CHECKED_IDS = (
    "quadruped_run",
    "quadruped_walk",
    "hopper_hop",
    "walker_run",
    "cheetah_run",
    "finger_turn_hard",
    "acrobot_swingup",
    "reacher_hard",
    "reach_duplo",
    "cartpole_balance",
    "cartpole_balance_sparse",
    "cartpole_swingup",
    "reacher_easy",
    "walker_walk",
    "cup_catch",
    "finger_spin",
    "humanoid_run",
    "lift_brick",
)


@pytest.mark.slow
def test_mujoco_ids_pass_gymnasium_and_sb3_checkers(gl_backend: str) -> None:
    for task in CHECKED_IDS:
        _check_registered(task, fast_render=True)  # 84x84 observations


def test_dmc_render_uses_task_camera_at_any_size(gl_backend: str) -> None:
    env = envs.make_env("quadruped_walk", 0, frame_stack=1, image_size=32, fast_render=True, render_mode="rgb_array")
    obs, _ = env.reset()
    frame = env.render()
    physics = env.unwrapped.physics
    assert frame.shape == (256, 256, 3) and frame.dtype == np.uint8 and frame.std() > 5
    assert (frame == physics.render(256, 256, camera_id=2)).all()
    assert env.metadata["render_fps"] == pytest.approx(1 / (2 * env.unwrapped._env.control_timestep()))
    assert (env.unwrapped.render_rgb(32).transpose(2, 0, 1) == obs).all()  # same camera as the observation
    obs2 = env.step(np.zeros(12, np.float32))[0]
    assert (obs2 == env.unwrapped.frame()).all()
    env.close()
    env.close()


def test_reach_duplo_render_and_close_twice(gl_backend: str) -> None:
    env = envs.make_env("reach_duplo", 0, frame_stack=1, fast_render=True, render_mode="rgb_array", render_size=128)
    obs, _ = env.reset()
    assert env.render().shape == (128, 128, 3)
    assert (env.unwrapped.render_rgb(84).transpose(2, 0, 1) == obs).all()  # its front_close camera
    env.close()
    env.close()


def test_kept_cameras_render_what_physics_render_does(gl_backend: str) -> None:
    """Frames come from a dm_control Camera kept per (size, camera): interleaved observation and
    video renders, faithful quality, over steps and an episode reset, must equal a camera made
    anew for each render (physics.render), and earlier frames must not change after later renders."""
    env = envs.make_env("cheetah_run", 3, frame_stack=1, image_size=48, render_mode="rgb_array", render_size=64)
    physics = env.unwrapped.physics
    obs, _ = env.reset(seed=3)
    kept, fresh = [], []
    rng = np.random.default_rng(0)
    for t in range(12):
        if t == 6:
            obs, _ = env.reset(seed=4)
        else:
            obs = env.step(rng.uniform(-1, 1, 6).astype(np.float32))[0]
        kept += [obs, env.render()]
        fresh += [physics.render(48, 48, camera_id=0).transpose(2, 0, 1), physics.render(64, 64, camera_id=0)]
    assert all(np.array_equal(a, b) for a, b in zip(kept, fresh, strict=True))
    assert not np.array_equal(kept[1], kept[3])  # the video frames are separate arrays
    env.close()


def test_reach_duplo_video_follows_each_new_physics(gl_backend: str) -> None:
    env = envs.make_env("reach_duplo", 0, frame_stack=1, fast_render=True, render_mode="rgb_array", render_size=64)
    for seed in (0, 1):  # the composer env builds a new Physics at every reset
        env.reset(seed=seed)
        physics = env.unwrapped.physics
        assert np.array_equal(env.render(), physics.render(64, 64, camera_id=env.unwrapped._camera()))
    env.close()


def test_building_cheetah_logs_no_settotalmass_warning(gl_backend: str, caplog) -> None:
    """MuJoCo warns (through absl) that cheetah.xml's settotalmass is deprecated at every build:
    the suite's env drops exactly that warning, and only while it builds."""
    import logging

    from dm_control import suite

    caplog.set_level(logging.WARNING)
    suite.load("cheetah", "run")  # the control: dm_control's own build logs it
    assert any("settotalmass" in r.getMessage() for r in caplog.records)
    caplog.clear()
    env = envs.make_env("cheetah_run", 0, image_size=24)
    assert [r.getMessage() for r in caplog.records if "settotalmass" in r.getMessage()] == []
    logging.getLogger("absl").warning("another warning")  # the filter is gone after the build
    assert [r.getMessage() for r in caplog.records] == ["another warning"]
    env.close()


def test_videos_play_at_the_envs_rate(gl_backend: str) -> None:
    # one frame per agent step: 1 / (control timestep x action repeat); cartpole's timestep is 0.01 s
    env = envs.make_env("cartpole_swingup", 0, action_repeat=2, image_size=24)
    assert env.unwrapped._env.control_timestep() == pytest.approx(0.01)
    assert env.metadata["render_fps"] == pytest.approx(50)
    env.close()
