"""Every dm_control task by name: the static table against dm_control, the presets against the
references' task configs, `taco tasks`, gymnasium ids, and our envs against the references' way of
building them (pixels, rewards and discounts over a fixed action sequence).

The reference env chain is built here from dm_control directly, as DrQ-v2's and TACO's `dmc.make`
build theirs: `<domain>_<task>` split at the first underscore (`cup` = `ball_in_cup`), `suite.load(...,
task_kwargs={'random': seed}, visualize_reward=False)` else `manipulation.load('<name>_vision')`, a
float32 action spec, action repeat 2 summing rewards, dm_control's `action_scale.Wrapper` to [-1, 1],
84x84 pixels from camera 0 (2 for quadruped) by dm_control's `pixels.Wrapper` or the manipulation
env's `front_close` observation, and 3 stacked frames.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from taco_rl import envs
from taco_rl.envs.tasks import TASK_TABLE
from taco_rl.runners.core.config import config_hash, resolve

REPO = Path(__file__).resolve().parents[1]

# The references' cfgs/task folders (facebookresearch/drqv2, FrankZheng2022/TACO): task -> difficulty.
DRQV2_TASKS = {
    "acrobot_swingup": "medium",
    "cartpole_balance": "easy",
    "cartpole_balance_sparse": "easy",
    "cartpole_swingup": "easy",
    "cartpole_swingup_sparse": "medium",
    "cheetah_run": "medium",
    "cup_catch": "easy",
    "finger_spin": "easy",
    "finger_turn_easy": "medium",
    "finger_turn_hard": "medium",
    "hopper_hop": "medium",
    "hopper_stand": "easy",
    "humanoid_run": "hard",
    "humanoid_stand": "hard",
    "humanoid_walk": "hard",
    "pendulum_swingup": "easy",
    "quadruped_run": "medium",
    "quadruped_walk": "medium",
    "reach_duplo": "medium",
    "reacher_easy": "medium",
    "reacher_hard": "medium",
    "walker_run": "medium",
    "walker_stand": "easy",
    "walker_walk": "easy",
}
TACO_TASKS = {
    **{t: d for t, d in DRQV2_TASKS.items() if not t.startswith("humanoid_")},
    "acrobot_swingup_sparse": "medium",
    "manipulator_bring_ball": "hard",
}
REFERENCE_TASKS = sorted(DRQV2_TASKS.keys() | TACO_TASKS.keys())
# Their per-task settings beyond the difficulty.
REFERENCE_OVERRIDES: dict[str, dict[str, Any]] = {
    **{t: {"lr": 8e-5, "feature_dim": 100} for t in ("humanoid_stand", "humanoid_walk", "humanoid_run")},
    **{t: {"nstep": 1, "batch_size": 512} for t in ("walker_stand", "walker_walk", "walker_run")},
    "quadruped_run": {"capacity": 100_000},
}
STEPS = {"easy": 100_000, "medium": 500_000, "hard": 2_000_000}
DRQV2_FRAMES = {"easy": 1_100_000, "medium": 3_100_000, "hard": 30_100_000}


@pytest.fixture(scope="module")
def gl_backend() -> str:
    try:
        return envs.probe_render_backend()
    except envs.RenderBackendError as err:
        pytest.skip(f"no MuJoCo render backend: {err}")


# Run-directory hashes of the tasks that existed before every dm_control task got a name, computed on
# the code before the presets were rewritten from the references' task configs. Their settings did not
# change, so neither may their run directories (reacher_easy's did: it is medium in both references).
PINNED_HASHES = {
    "quadruped_run": ("5de16144", "49bb4634"),
    "quadruped_walk": ("26eabab5", "35f3eb22"),
    "hopper_hop": ("b40b4be4", "5872c04d"),
    "walker_run": ("ade9e87c", "1ae73934"),
    "cheetah_run": ("2b17f9bd", "bd0972bd"),
    "finger_turn_hard": ("6bf50e59", "3e8a1a17"),
    "acrobot_swingup": ("aa4e037d", "4a99b231"),
    "reacher_hard": ("ebec9bfe", "49346126"),
    "reach_duplo": ("6b001140", "8e637d64"),
    "cartpole_balance": ("0f77617b", "0f2fbfeb"),
    "cartpole_balance_sparse": ("957db987", "7feca9e4"),
    "cartpole_swingup": ("4499d746", "af07850c"),
    "walker_walk": ("1f321b8a", "2758f501"),
    "cup_catch": ("182eb01c", "355341f4"),
    "finger_spin": ("8d3883bf", "d2eb2bb7"),
    "point_reach": ("a6e2dd0e", "d25e9ac5"),
}


@pytest.mark.parametrize("task", sorted(PINNED_HASHES))
def test_existing_tasks_keep_their_run_directory_hashes(task: str) -> None:
    plain, taco = PINNED_HASHES[task]
    assert config_hash(resolve([f"task={task}"])) == plain
    assert config_hash(resolve([f"task={task}", "aux=taco"])) == taco


def test_reacher_easy_is_medium_as_in_both_references() -> None:
    cfg = resolve(["task=reacher_easy"])
    assert cfg.std_schedule == "linear(1.0,0.1,500000)"
    assert config_hash(cfg) == "8d1208f9"  # its new run directory (it was e7adc1aa with the 100k schedule)


# --- presets ---------------------------------------------------------------------------------------


def test_reference_lists() -> None:
    assert (len(DRQV2_TASKS), len(TACO_TASKS), len(REFERENCE_TASKS)) == (24, 23, 26)
    assert sorted(envs.REFERENCE_TASKS) == REFERENCE_TASKS
    for name in envs.TASKS:
        spec = envs.get_task_spec(name)
        expected = tuple(ref for ref, tasks in (("DrQ-v2", DRQV2_TASKS), ("TACO", TACO_TASKS)) if name in tasks)
        assert spec.references == expected, name


@pytest.mark.parametrize("task", REFERENCE_TASKS)
def test_presets_follow_the_references_task_configs(task: str) -> None:
    difficulty = DRQV2_TASKS.get(task) or TACO_TASKS[task]
    assert TACO_TASKS.get(task, difficulty) == DRQV2_TASKS.get(task, difficulty)  # they agree where both configure
    cfg = resolve([f"task={task}"])
    expected = {
        "std_schedule": f"linear(1.0,0.1,{STEPS[difficulty]})",
        "frames": 1_000_000,
        "lr": 1e-4,
        "feature_dim": 50,
        "nstep": 3,
        "batch_size": 256,
        "capacity": 1_000_000,
        "action_repeat": 2,
        "frame_stack": 3,
        **REFERENCE_OVERRIDES.get(task, {}),
    }
    assert {k: getattr(cfg, k) for k in expected} == expected
    assert envs.get_task_spec(task).difficulty == difficulty
    assert resolve([f"task={task}", "preset=drqv2"]).frames == DRQV2_FRAMES[difficulty]
    assert resolve([f"task={task}", "preset=drqv2", "frames=5000"]).frames == 5000  # overrides still win


def test_unconfigured_tasks_get_the_medium_settings() -> None:
    unconfigured = [t for t in envs.TASKS if t not in REFERENCE_TASKS and t != "point_reach"]
    assert len(unconfigured) == 63 - 26
    plain = resolve(["task=cheetah_run"])
    for task in unconfigured:
        cfg = resolve([f"task={task}"])
        assert envs.get_task_spec(task).difficulty == "medium", task
        assert vars(cfg) == vars(plain) | {"task": task}
        assert resolve([f"task={task}", "preset=drqv2"]).frames == 3_100_000


def test_aux_taco_keeps_the_task_difficulty_and_its_own_settings() -> None:
    cfg = resolve(["task=humanoid_run", "aux=taco"])
    # TACO's published setting (SPEC 4: batch 1024, lr 1e-4 everywhere) on top of the hard schedule
    assert (cfg.std_schedule, cfg.feature_dim, cfg.batch_size, cfg.lr) == ("linear(1.0,0.1,2000000)", 100, 1024, 1e-4)


def test_alias_is_the_same_task_and_run() -> None:
    assert envs.get_task_spec("ball_in_cup_catch") is envs.get_task_spec("cup_catch")
    alias, name = resolve(["task=ball_in_cup_catch"]), resolve(["task=cup_catch"])
    assert alias.task == "cup_catch" and config_hash(alias) == config_hash(name) == PINNED_HASHES["cup_catch"][0]
    assert envs.ALIASES == {"ball_in_cup_catch": "cup_catch"}


def test_unknown_task_suggests_close_names_and_points_to_taco_tasks(capsys: pytest.CaptureFixture[str]) -> None:
    for typo, suggested in (
        ("cheetah_rn", "cheetah_run"),
        ("lqr_2_1", "lqr_lqr_2_1"),
        ("dog", "dog_run"),
        ("humanoid_cmu_run", "humanoid_CMU_run"),
        ("lift_brick_vision", "lift_brick"),
        ("ball_in_cup_catc", "ball_in_cup_catch"),
    ):
        with pytest.raises(envs.UnknownTaskError) as info:
            envs.get_task_spec(typo)
        message = str(info.value)
        assert message.startswith(f"unknown task {typo!r}; did you mean "), message
        assert suggested in info.value.suggestions, message
        assert "`taco tasks`" in message
    from taco_rl.runners.cli import main

    assert main(["train", "task=dog_rn", "root=/nonexistent"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("taco: error: unknown task 'dog_rn'; did you mean dog_run") and "`taco tasks`" in err


# --- the table against dm_control ------------------------------------------------------------------


def _reference_split(name: str) -> tuple[str, str]:
    domain, task = name.split("_", 1)
    return {"cup": "ball_in_cup"}.get(domain, domain), task


def test_table_names_every_dm_control_task() -> None:
    from dm_control import manipulation, suite

    suite_names = {f"{d}_{t}" for d, t in suite.ALL_TASKS}
    vision = {n[: -len("_vision")] for n in manipulation.ALL if n.endswith("_vision")}
    assert len(suite_names) == 51 and len(vision) == 12
    ours = {spec.kind: set() for spec in TASK_TABLE.values()}
    for name, spec in TASK_TABLE.items():
        ours[spec.kind] |= {name, *spec.aliases}
    assert ours["suite"] == suite_names | {"cup_catch"}
    assert ours["manipulation"] == vision
    assert ours["point"] == {"point_reach"}
    for name, spec in TASK_TABLE.items():
        if spec.kind == "suite":
            assert (spec.domain, spec.task) in suite.ALL_TASKS and f"{spec.domain}_{spec.task}" in (name, *spec.aliases)
        if name in REFERENCE_TASKS:  # the references' own split of the name finds the same env
            domain, task = _reference_split(name)
            if (domain, task) in suite.ALL_TASKS:
                assert (spec.kind, spec.domain, spec.task) == ("suite", domain, task)
            else:
                assert (spec.kind, spec.task) == ("manipulation", f"{name}_vision")


def test_every_suite_task_builds_as_the_table_says(gl_backend: str) -> None:
    """Each of the 51: our env's action size, time limit and camera are dm_control's; a frame renders; a step."""
    for name, spec in TASK_TABLE.items():
        if spec.kind != "suite":
            continue
        env = envs.make_env(name, 0, frame_stack=1, image_size=24, fast_render=True)
        dmc = env.unwrapped._env
        assert env.action_space.shape == (spec.action_dim,) == dmc.action_spec().shape, name
        limit = dmc._step_limit  # noqa: SLF001 - dm_control's frames per episode (inf: no time limit)
        assert spec.episode_frames == (None if limit == float("inf") else limit), name
        assert spec.camera_id == (2 if spec.domain == "quadruped" else 0), name
        obs, _ = env.reset()
        assert (obs == env.unwrapped.physics.render(24, 24, camera_id=spec.camera_id).transpose(2, 0, 1)).all(), name
        assert obs.std() > 1, name
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        assert np.isfinite(reward) and not (terminated or truncated) and info["frames"] == 2, name
        env.close()


@pytest.mark.slow
def test_every_manipulation_task_builds_as_the_table_says(gl_backend: str) -> None:
    for name, spec in TASK_TABLE.items():
        if spec.kind != "manipulation":
            continue
        env = envs.make_env(name, 0, frame_stack=1, fast_render=True)
        dmc = env.unwrapped._env
        assert env.action_space.shape == (spec.action_dim,) == dmc.action_spec().shape, name
        assert round(dmc._time_limit / dmc.control_timestep()) == spec.episode_frames, name  # noqa: SLF001
        obs, _ = env.reset()
        assert obs.shape == (3, 84, 84) and obs.std() > 1, name
        assert spec.pixels_key == "front_close"
        env.close()


def test_lqr_builds_with_camera_0(gl_backend: str) -> None:
    """No reference used lqr's pixels: it still builds, camera 0, its own (finite) bounds, no time limit."""
    env = envs.make_env("lqr_lqr_2_1", 0, frame_stack=1, image_size=32, fast_render=True)
    obs, _ = env.reset()
    physics = env.unwrapped.physics
    assert (obs == physics.render(32, 32, camera_id=0).transpose(2, 0, 1)).all() and obs.std() > 1
    spec = env.unwrapped._env.action_spec()
    assert env.action_space.shape == (1,) and not np.allclose(spec.maximum, 1.0)
    obs, reward, terminated, truncated, _ = env.step(np.full(1, 0.5, np.float32))
    low, high = spec.minimum[0], spec.maximum[0]
    assert physics.data.ctrl[0] == pytest.approx(float(np.float32(low + 0.75 * (high - low))))  # 0.5 rescaled
    assert np.isfinite(reward) and not (terminated or truncated)
    assert envs.get_task_spec("lqr_lqr_2_1").episode_frames is None
    env.close()


# --- `taco tasks` and gymnasium ---------------------------------------------------------------------


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)


def test_taco_tasks_lists_every_task_without_torch_or_dm_control() -> None:
    out = _run(
        "import sys, json\nfrom taco_rl.runners.cli import main\nmain(['tasks', '--json'])\n"
        "print(json.dumps(sorted(m for m in ('torch', 'dm_control', 'mujoco') if m in sys.modules)))"
    )
    assert out.returncode == 0, out.stderr
    *listing, loaded = out.stdout.strip().splitlines()
    assert json.loads(loaded) == []
    rows = {row["name"]: row for row in json.loads("\n".join(listing))}
    assert list(rows) == list(envs.TASKS) and len(rows) == 64
    assert rows["humanoid_run"] | {"preset": None} == rows["humanoid_run"] | {
        "kind": "suite",
        "domain": "humanoid",
        "difficulty": "hard",
        "source": "DrQ-v2",
        "configured": True,
        "action_dim": 21,
        "episode_frames": 1000,
        "episode_steps": 500,
        "camera": 0,
        "gym_id": "taco/humanoid_run-v0",
        "preset": None,
    }
    assert rows["humanoid_run"]["preset"]["lr"] == 8e-5
    assert (rows["quadruped_run"]["camera"], rows["quadruped_run"]["source"]) == (2, "DrQ-v2, TACO")
    assert (rows["dog_run"]["difficulty"], rows["dog_run"]["configured"], rows["dog_run"]["source"]) == (
        "medium",
        False,
        "dm_control",
    )
    assert (rows["manipulator_bring_ball"]["difficulty"], rows["manipulator_bring_ball"]["source"]) == ("hard", "TACO")
    assert (
        rows["lift_brick"]["kind"],
        rows["lift_brick"]["camera"],
        rows["lift_brick"]["episode_steps"],
        rows["lift_brick"]["action_dim"],
    ) == ("manipulation", "front_close", 125, 9)
    assert rows["lqr_lqr_2_1"]["episode_steps"] is None
    assert (rows["point_reach"]["episode_steps"], rows["point_reach"]["difficulty"]) == (50, None)
    assert rows["cup_catch"]["aliases"] == ["ball_in_cup_catch"]

    table = subprocess.run(
        [sys.executable, "-m", "taco_rl", "tasks"], cwd=REPO, capture_output=True, text=True, timeout=120, check=True
    ).stdout.splitlines()
    lines = {line.split()[0]: line.split() for line in table[1:65]}
    assert list(lines) == list(envs.TASKS)
    assert lines["dog_run"][1:4] == ["suite", "dog", "medium*"] and lines["reacher_easy"][3] == "medium"
    assert lines["humanoid_run"][3:8] == ["hard", "DrQ-v2", "21", "500", "0"]
    assert any("no reference configures" in line for line in table[65:])


def test_taco_help_lists_the_tasks_command() -> None:
    from taco_rl.runners.cli import _parser

    assert "tasks" in _parser().format_help()


def test_gymnasium_ids_without_our_import() -> None:
    names = [*envs.TASKS, *envs.ALIASES]
    out = _run(
        "import json, sys, gymnasium\n"
        f"ids = [f'taco/{{n}}-v0' for n in {names!r}]\n"
        "missing = [i for i in ids if i not in gymnasium.registry]\n"
        "env = gymnasium.make('taco/fish_swim-v0')\n"
        "print(json.dumps([missing, list(env.action_space.shape), list(env.observation_space.shape)]))"
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [[], [5], [9, 84, 84]]


# --- equal to the references -------------------------------------------------------------------------


def test_rescale_action_is_the_reference_chain_bit_for_bit() -> None:
    """float32 action spec + dm_control's action_scale.Wrapper to [-1, 1], then the spec's dtype."""
    from dm_control.suite.wrappers import action_scale
    from dm_env import specs

    class Sink:
        def __init__(self, spec: specs.BoundedArray) -> None:
            self.spec, self.action = spec, None

        def action_spec(self) -> specs.BoundedArray:
            return self.spec

        def step(self, action: np.ndarray) -> None:
            self.action = action

    rng = np.random.default_rng(0)
    bounds = [
        (-np.ones(4), np.ones(4)),  # most suite tasks
        (np.array([-1.0, -1.0, -0.8, -1e10]), np.array([1.0, 1.1, 0.8, 1e10])),  # quadruped, lqr
        (np.array([-0.6283185307, -0.837758041, -5.0, -5.0]), np.array([0.6283185307, 0.837758041, 5.0, 5.0])),
    ]
    for low, high in bounds:
        sink = Sink(specs.BoundedArray(low.shape, np.float32, low, high))
        wrapped = action_scale.Wrapper(sink, minimum=-1.0, maximum=1.0)
        actions = rng.uniform(-1, 1, (5000, 4)).astype(np.float32)
        actions[::7, 0] = rng.choice(np.array([1e-12, -3e-30, 0.0, 1.0, -1.0], np.float32), len(actions[::7]))
        for action in actions:
            wrapped.step(action)
            ours = envs.rescale_action(action, low, high, np.float64)
            assert np.array_equal(ours, sink.action.astype(np.float64)), (action, low, high)


class ReferenceEnv:
    """The references' env chain for `name`, from dm_control (see the module docstring)."""

    def __init__(self, name: str, seed: int, action_repeat: int = 2, frame_stack: int = 3) -> None:
        from dm_control import manipulation, suite
        from dm_control.suite.wrappers import action_scale, pixels

        domain, task = _reference_split(name)
        is_suite = (domain, task) in suite.ALL_TASKS
        if is_suite:
            env: Any = suite.load(domain, task, task_kwargs={"random": seed}, visualize_reward=False)
            self.key = "pixels"
        else:
            env = manipulation.load(f"{name}_vision", seed=seed)
            self.key = "front_close"
        env = _Repeat(_Float32Spec(env), action_repeat)
        env = action_scale.Wrapper(env, minimum=-1.0, maximum=+1.0)
        if is_suite:
            camera = 2 if domain == "quadruped" else 0
            env = pixels.Wrapper(env, pixels_only=True, render_kwargs={"height": 84, "width": 84, "camera_id": camera})
        self.env = env
        self.frames: deque[np.ndarray] = deque(maxlen=frame_stack)

    def _frame(self, time_step: Any) -> np.ndarray:
        pixels = time_step.observation[self.key]
        return (pixels[0] if pixels.ndim == 4 else pixels).transpose(2, 0, 1).copy()

    def reset(self) -> np.ndarray:
        frame = self._frame(self.env.reset())
        self.frames.extend([frame] * self.frames.maxlen)  # type: ignore[operator]
        return np.concatenate(self.frames)

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, float, bool]:
        time_step = self.env.step(action)
        self.frames.append(self._frame(time_step))
        return np.concatenate(self.frames), time_step.reward, time_step.discount, time_step.last()


class _Float32Spec:
    """Offers a float32 action spec with the env's bounds; casts actions back to the env's dtype."""

    def __init__(self, env: Any) -> None:
        from dm_env import specs

        self._env = env
        inner = env.action_spec()
        self._spec = specs.BoundedArray(inner.shape, np.float32, inner.minimum, inner.maximum, "action")

    def action_spec(self) -> Any:
        return self._spec

    def step(self, action: np.ndarray) -> Any:
        return self._env.step(action.astype(self._env.action_spec().dtype))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._env, name)


class _Repeat:
    """Steps each action `repeat` times; reward summed (weighted by the discount so far), discounts multiplied."""

    def __init__(self, env: Any, repeat: int) -> None:
        self._env, self._repeat = env, repeat

    def step(self, action: np.ndarray) -> Any:
        total, discount = 0.0, 1.0
        for _ in range(self._repeat):
            time_step = self._env.step(action)
            total += (time_step.reward or 0.0) * discount
            discount *= time_step.discount
            if time_step.last():
                break
        return time_step._replace(reward=total, discount=discount)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._env, name)


def assert_equal_to_reference(name: str, steps: int | None, seed: int = 1) -> None:
    """Ours (make_env, faithful rendering) and the reference chain over one fixed action sequence:
    the same stacked pixels, rewards and discounts at every step; `steps=None` runs the whole episode."""
    ours = envs.make_env(name, seed)
    reference = ReferenceEnv(name, seed)
    spec = envs.get_task_spec(name)
    n = steps or spec.episode_frames // 2  # type: ignore[operator]
    # in [-1, 1], the bounds themselves included
    actions = np.clip(np.random.default_rng(seed).uniform(-1.1, 1.1, (n, spec.action_dim)), -1, 1).astype(np.float32)
    obs, _ = ours.reset()
    assert np.array_equal(obs, reference.reset()), f"{name}: first observation"
    for t, action in enumerate(actions):
        obs, reward, terminated, truncated, info = ours.step(action)
        ref_obs, ref_reward, ref_discount, ref_last = reference.step(action)
        assert np.array_equal(obs, ref_obs), f"{name}: pixels differ at step {t}"
        assert (reward, info["discount"]) == (ref_reward, ref_discount), f"{name}: step {t}"
        assert not terminated and truncated == ref_last == (steps is None and t == n - 1), f"{name}: step {t}"
    ours.close()


# Whole episodes for two (a suite task to its 1000-frame limit; reach_duplo, a manipulation env, to
# its 250-frame limit), the first 50 steps for the rest. Every step renders on both sides (a
# manipulation env renders each of the repeated frames), so the whole episodes cost the most.
WHOLE_EPISODE = ("cartpole_swingup", "reach_duplo")
SLOW_TASKS = ("humanoid_run", "humanoid_stand", "humanoid_walk")  # heavier frames: with the slow tests


@pytest.mark.parametrize(
    "task",
    [
        pytest.param(t, marks=pytest.mark.slow) if t in SLOW_TASKS else t
        for t in REFERENCE_TASKS
        if t not in WHOLE_EPISODE
    ],
)
def test_first_50_steps_equal_the_reference(task: str, gl_backend: str) -> None:
    assert_equal_to_reference(task, 50)


@pytest.mark.slow
@pytest.mark.parametrize("task", WHOLE_EPISODE)
def test_whole_episode_equals_the_reference(task: str, gl_backend: str) -> None:
    assert_equal_to_reference(task, None)
