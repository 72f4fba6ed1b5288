"""The `taco` command line: options anywhere among a subcommand's items, a subcommand's own usage for
an unknown option, and help and setting checks that answer before torch is imported."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from taco_rl.runners.cli import _parser, main

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["train", "a=1", "--no-progress", "b=2"], {"overrides": ["a=1", "b=2"], "no_progress": True}),
        (["offline", "a=1", "--no-progress", "b=2"], {"overrides": ["a=1", "b=2"], "no_progress": True}),
        (["bench", "a=1", "--updates", "3", "b=2", "--skip-env"], {"overrides": ["a=1", "b=2"], "updates": 3}),
        (["sweep", "f.yaml", "a=1", "--dry-run", "b=2"], {"file": "f.yaml", "overrides": ["a=1", "b=2"]}),
        (["report", "run1", "--out", "o", "run2"], {"runs": ["run1", "run2"], "out": "o"}),
        (
            ["data", "collect", "policy=random", "--no-progress", "episodes=2"],
            {"args": ["policy=random", "episodes=2"]},
        ),
        (["data", "from-run", "R", "--no-progress", "out=o"], {"args": ["R", "out=o"], "no_progress": True}),
        (["data", "concat", "A", "--no-progress", "B", "out=o"], {"args": ["A", "B", "out=o"]}),
        (["data", "info", "D", "--no-progress", "verify=true"], {"args": ["D", "verify=true"]}),
        (["data", "import", "vd4rl", "--no-progress", "P", "out=o"], {"args": ["vd4rl", "P", "out=o"]}),
        (["data", "export", "minari", "D", "--no-progress", "taco/t/x-v0"], {"args": ["minari", "D", "taco/t/x-v0"]}),
    ],
)
def test_options_may_come_anywhere_among_the_items(argv, expected):
    args = vars(_parser().parse_args(argv))
    assert {k: args[k] for k in expected} == expected


@pytest.mark.parametrize(
    "argv, usage, option",
    [(["train", "--task", "x"], "taco train", "--task"), (["data", "info", "D", "--x"], "taco data info", "--x")],
)
def test_an_unknown_option_shows_the_subcommands_usage(argv, usage, option, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith(f"usage: {usage} [-h]"), err
    assert f"{usage}: error: unrecognized arguments: {option}" in err


PROBE = """
import contextlib, io, json, sys
from taco_rl.runners.cli import main
codes = []
with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    for argv in (["--help"], ["train", "--help"], ["offline", "--help"], ["bench", "--help"], ["sweep", "--help"],
                 ["report", "--help"], ["data", "--help"], ["data", "collect", "--help"]):
        try:
            main(argv)
        except SystemExit as e:
            codes.append(e.code)
    for argv in (["train", "task=cheetah_rn"], ["train", "lr=-1"], ["train", "image_size=8"], ["train", "agent=cql"],
                 ["train", "aux=bogus"], ["offline", "frames=3"],
                 ["offline", f"dataset={sys.argv[1]}", "task=walker_walk"],  # not the dataset's task
                 ["bench", "mode=offline", "updates=0"], ["data", "collect", "bogus=1"], ["data", "info"]):
        codes.append(main(argv))
heavy = ("torch", "tensordict", "dm_control", "mujoco", "taco_rl.agents", "taco_rl.runners.online.train")
print(json.dumps({"codes": codes, "imported": [m for m in heavy if m in sys.modules]}))
"""


def test_help_and_bad_settings_answer_before_torch_is_imported(tmp_path):
    dataset = tmp_path / "ds"
    dataset.mkdir()
    (dataset / "dataset.json").write_text(json.dumps({"task": "point_reach"}))  # task=walker_walk disagrees
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(dataset)], capture_output=True, text=True, cwd=ROOT, timeout=300, check=True
    )
    got = json.loads(out.stdout.splitlines()[-1])
    assert got["codes"] == [0] * 8 + [2] * 10
    assert got["imported"] == []


def test_the_learner_names_the_cli_checks_are_the_learners():
    from taco_rl import agents
    from taco_rl.agents.nets import encoder_out_size
    from taco_rl.learner_choices import AUX_KINDS, MIN_IMAGE_SIZE, OFFLINE_AGENT_NAMES, ONLINE_AGENT_NAMES

    assert tuple(agents.AGENTS) == ONLINE_AGENT_NAMES and tuple(agents.OFFLINE_AGENTS) == OFFLINE_AGENT_NAMES
    assert agents.AUX_KINDS == AUX_KINDS
    assert encoder_out_size(MIN_IMAGE_SIZE) == 1 and encoder_out_size(MIN_IMAGE_SIZE - 1) < 1
