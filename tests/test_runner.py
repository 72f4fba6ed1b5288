"""Config, CLI errors, checkpoint round trip and run artefacts (on the numpy env: fast, CPU)."""

from __future__ import annotations

import json
import os

import pytest
import torch

from taco_rl.envs import UnknownTaskError
from taco_rl.runners.cli import main
from taco_rl.runners.core import checkpoint as ckpt
from taco_rl.runners.core.config import ConfigError, resolve, run_directory
from taco_rl.runners.online.train import RunDirError, Trainer

TINY = [
    "task=point_reach",
    "hidden_dim=32",
    "batch_size=16",
    "seed_frames=100",
    "expl_steps=50",
    "eval_episodes=1",
    "save_video=false",
]


# ---------------------------------------------------------------- config
def test_presets_then_overrides():
    cfg = resolve(["task=walker_run"])
    assert (cfg.nstep, cfg.batch_size, cfg.std_schedule) == (1, 512, "linear(1.0,0.1,500000)")
    taco = resolve(["task=walker_run", "aux=taco"])
    assert (taco.batch_size, taco.taco_k, taco.lr) == (1024, 3, 1e-4)
    assert resolve(["task=cartpole_swingup"]).std_schedule == "linear(1.0,0.1,100000)"
    assert resolve(["task=quadruped_run"]).capacity == 100_000
    assert resolve(["aux=taco", "batch_size=256"]).batch_size == 256  # the user wins
    paper = resolve(["task=cheetah_run"])
    assert (
        paper.action_repeat,
        paper.frame_stack,
        paper.frames,
        paper.eval_every_frames,
        paper.eval_episodes,
        paper.image_size,
    ) == (2, 3, 1_000_000, 10_000, 10, 84)


def test_unknown_key_names_closest():
    with pytest.raises(ConfigError, match="batch_size"):
        resolve(["batchsize=3"])


@pytest.mark.parametrize(
    "bad,match",
    [
        (["task"], "malformed override"),
        (["=3"], "malformed override"),
        (["batch_size=abc"], "batch_size"),
        (["agent=ppo"], "agent='ppo'"),
        (["preset=fastest"], "unknown preset"),
        (["nstep=0"], "positive"),
    ],
)
def test_bad_overrides(bad, match):
    with pytest.raises(ConfigError, match=match):
        resolve(bad)


def test_unknown_task():
    with pytest.raises(UnknownTaskError, match="cheetah_run"):
        resolve(["task=cheetah_rn"])


def test_run_dir_derived_from_config(tmp_path):
    a = run_directory(resolve(["root=" + str(tmp_path), "seed=1"]))
    assert a == run_directory(resolve(["root=" + str(tmp_path), "seed=1", "frames=5"]))  # extends, same run
    assert a != run_directory(resolve(["root=" + str(tmp_path), "seed=2"]))
    assert a != run_directory(resolve(["root=" + str(tmp_path), "seed=1", "lr=0.001"]))
    assert a.parts[-3:-1] == ("cheetah_run", "drqv2-none")


def test_cli_errors_are_clear(capsys, tmp_path):
    assert main(["train", "task=cheetah_rn"]) == 2
    assert "cheetah_run" in capsys.readouterr().err
    assert main(["train", "lrr=1"]) == 2
    assert "unknown config key 'lrr'; did you mean lr" in capsys.readouterr().err
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    if os.access(locked, os.W_OK):  # root ignores permissions: use a path under a file instead
        blocker = tmp_path / "file"
        blocker.write_text("x")
        locked = blocker
    assert main(["train", *TINY, f"run_dir={locked}/run", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "not writable" in err and "run_dir" in err


def test_help_lists_every_key(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    for key in ("taco_k", "optimizer", "fast_render", "precision", "preset"):
        assert key in out


# ---------------------------------------------------------------- runs and resume
def _params(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {f"{n}.{k}": v.clone() for n, m in trainer.agent.modules().items() for k, v in m.state_dict().items()}


@pytest.mark.parametrize("extra", [[], ["agent=sac", "aux=taco"]])
def test_resume_equals_uninterrupted(tmp_path, extra):
    common = [*TINY, *extra, "checkpoint_every_frames=100", "eval_every_frames=100"]
    full = Trainer(resolve([*common, "frames=300", f"run_dir={tmp_path / 'full'}"]), progress=False)
    full.train()
    first = Trainer(resolve([*common, "frames=150", f"run_dir={tmp_path / 'split'}"]), progress=False)
    first.train()
    resumed = Trainer(resolve([*common, "frames=300", f"run_dir={tmp_path / 'split'}"]), progress=False)
    assert resumed.counters["frame"] == 150 and len(resumed.replay) > 0
    resumed.train()
    a, b = _params(full), _params(resumed)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert full.counters["step"] == resumed.counters["step"] and full.counters["episode"] == resumed.counters["episode"]


def test_run_leaves_artefacts_and_checkpoint_loads_weights_only(tmp_path):
    cfg = resolve(
        [*TINY, "save_video=true", "frames=200", "eval_every_frames=100", "log_every_frames=50", f"run_dir={tmp_path}"]
    )
    Trainer(cfg, progress=False).train()
    assert (tmp_path / "config.yaml").exists() and (tmp_path / "train.csv").exists()
    rows = (tmp_path / "eval.csv").read_text().splitlines()
    assert rows[0] == "frame,step,episode_return,return_std,episode_length,episodes" and len(rows) == 4
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))
    assert sorted(p.name for p in (tmp_path / "videos").iterdir())[0] == "eval_000000000.mp4"
    state = torch.load(tmp_path / "checkpoint" / "state.pt", weights_only=True)
    assert state["counters"]["frame"] == 200
    # a second run with the same command resumes a finished run without training again
    again = Trainer(cfg, progress=False)
    assert again.counters["frame"] == 200
    stamp = (tmp_path / "checkpoint" / "state.pt").stat().st_mtime_ns
    again.train()
    assert (tmp_path / "checkpoint" / "state.pt").stat().st_mtime_ns == stamp
    assert len((tmp_path / "eval.csv").read_text().splitlines()) == 4


def test_corrupt_checkpoint_is_reported(tmp_path):
    cfg = resolve([*TINY, "frames=100", f"run_dir={tmp_path}"])
    Trainer(cfg, progress=False).train()
    (tmp_path / "checkpoint" / "state.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ckpt.CheckpointError, match="cannot load checkpoint"):
        Trainer(cfg, progress=False)


def test_checkpoint_of_another_config_is_refused(tmp_path):
    Trainer(resolve([*TINY, "frames=100", f"run_dir={tmp_path}"]), progress=False).train()
    with pytest.raises(ckpt.CheckpointError, match="different configuration"):
        Trainer(resolve([*TINY, "frames=100", "lr=0.5", f"run_dir={tmp_path}"]), progress=False)


def test_unwritable_run_dir(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(RunDirError, match="not writable"):
        Trainer(resolve([*TINY, f"run_dir={blocker}/run"]), progress=False)


def test_bench_reports_required_keys(capsys):
    assert (
        main(
            [
                "bench",
                "task=point_reach",
                "hidden_dim=32",
                "batch_size=16",
                "--updates",
                "1",
                "--samples",
                "2",
                "--env-steps",
                "20",
                "--baseline",
            ]
        )
        == 0
    )
    result = json.loads(capsys.readouterr().out)
    for key in (
        "update_ms",
        "sample_ms",
        "env_fps",
        "env_fps_fast",
        "bytes_per_transition",
        "peak_rss_mb",
        "baseline_update_ms",
        "settings",
    ):
        assert key in result
    assert result["settings"]["batch_size"] == 16 and result["update_ms"] > 0
