"""Bad input that used to end in a traceback or be accepted: each is one line naming what and where."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from taco_rl.runners.cli import main
from taco_rl.runners.core import checkpoint as ckpt
from taco_rl.runners.core.config import ConfigError, resolve
from taco_rl.runners.study.report import default_out


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1 and err.startswith("taco: error: "), err
    return err


def test_report_names_the_line_of_a_non_utf8_eval_log(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("task: point_reach\nseed: 1\nagent: drqv2\naux: none\nframes: 200\n")
    (run / "eval.csv").write_bytes(b"frame,episode_return\n100,1.5\n200,2\xff\xfe.0\n")
    assert main(["report", str(run)]) == 2  # and no --out needed
    err = _one_line_error(capsys)
    assert f"{run / 'eval.csv'}, line 3: not UTF-8" in err
    (run / "config.yaml").write_bytes(b"task: point\xff_reach\n")
    assert main(["report", str(run)]) == 2
    assert "config.yaml" in _one_line_error(capsys)


def test_report_out_defaults_to_reports_named_for_the_sweep(tmp_path):
    sweep = tmp_path / "taco_k.yaml"
    sweep.write_text("tasks: [point_reach]\nseeds: [1]\n")
    assert default_out([str(sweep), "root=x"]) == Path("reports") / "taco_k"
    assert default_out(["runs/cheetah_run/*/*"]) == Path("reports") / "runs"


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo crafted-pickle-ran",))


def test_crafted_checkpoint_is_one_short_line(tmp_path):
    path = tmp_path / "state.pt"
    torch.save({"agent": _Evil()}, path)
    with pytest.raises(ckpt.CheckpointError) as e:
        ckpt.load(path)
    text = str(e.value)
    assert "\n" not in text and str(path) in text and "weights_only=True" in text and "posix.system" in text
    assert "PyTorch 2.6" not in text and len(text) < 300
    folder = tmp_path / "checkpoint"
    folder.mkdir()
    torch.save({"agent": _Evil()}, folder / ckpt.STATE)
    with pytest.raises(ckpt.CheckpointError) as e:
        ckpt.Checkpoints(folder).restore(lambda state, payload: None)
    assert "\n" not in str(e.value) and str(e.value).count("weights_only") == 1 and "run_dir=" in str(e.value)
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(ckpt.CheckpointError, match="truncated or damaged"):
        ckpt.load(path)


def test_capacity_below_batch_size_is_refused():
    with pytest.raises(ConfigError, match="capacity=100: expected at least batch_size = 256"):
        resolve(["capacity=100", "batch_size=256"])
    assert resolve(["capacity=256", "batch_size=256"]).capacity == 256


def test_empty_values_are_named(capsys):
    assert main(["train", "task=point_reach", "root="]) == 2
    assert "root='': expected a folder name" in _one_line_error(capsys)
    assert main(["train", "task=point_reach", "frames="]) == 2
    assert "frames= is empty: expected a value of type int" in _one_line_error(capsys)


def test_taco_sac_argument_checks():
    from taco_rl.sb3 import TacoSAC

    with pytest.raises(ValueError, match="TacoSAC takes image observations with policy 'CnnPolicy'.*'MlpPolicy'"):
        TacoSAC("MlpPolicy", None)
    for key in ("taco_weight", "curl_weight", "reward_weight"):
        for bad in (float("nan"), float("inf"), -1.0):
            with pytest.raises(ValueError, match=f"{key}={bad!r}: expected a finite number >= 0"):
                TacoSAC("CnnPolicy", None, **{key: bad})


def test_progress_bar_shows_no_fps_frozen_between_episodes(tmp_path, capsys):
    tiny = [
        "task=point_reach",
        "hidden_dim=32",
        "feature_dim=16",
        "batch_size=16",
        "seed_frames=100",
        "expl_steps=50",
        "eval_episodes=1",
        "save_video=false",
        "eval_every_frames=100",
        "frames=100",
        "checkpoint_every_frames=100",
        "log_every_frames=50",
        "capacity=2000",
        f"run_dir={tmp_path / 'r'}",
    ]
    assert main(["train", *tiny]) == 0
    err = capsys.readouterr().err
    assert "frame/s" in err and "ret=" in err  # tqdm's live rate beside the last episode's return
    assert "fps=" not in err  # an average fixed at the last episode end, beside it, disagreed with the rate
