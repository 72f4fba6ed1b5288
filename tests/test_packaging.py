"""The wheel installs one import package (taco_rl) and lives beside packages named `agents` and `envs`.

Everything here runs in subprocesses: a wheel built from a copy of the tree (no build isolation,
nothing downloaded), installed with a regular `pip install <tree>` into a fresh venv that also holds a
dummy distribution with top-level `agents` and `envs` packages. The fresh venv reaches this venv's
packages (torch, gymnasium, ...) through a path entry, without this venv's editable install.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "task=point_reach",
    "hidden_dim=32",
    "feature_dim=16",
    "batch_size=16",
    "seed_frames=60",
    "expl_steps=30",
    "eval_episodes=1",
    "save_video=false",
    "eval_every_frames=100",
    "checkpoint_every_frames=100",
    "log_every_frames=50",
    "capacity=500",
    "update_every_steps=4",
    "frames=100",
]


def _run(cmd: list[str], cwd: Path, **env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    proc = subprocess.run(
        cmd,
        cwd=cwd,
        env={**clean, "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1", **env},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def _tree_copy(dest: Path) -> Path:
    """The tree as git sees it (so that no stale build/ output of the checkout reaches the wheel)."""
    files = (
        subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        .stdout.decode()
        .split("\0")
    )
    for rel in filter(None, files):
        if (ROOT / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, dest / rel)
    return dest


def _dummy_distribution(dest: Path) -> Path:
    """A distribution installing top-level `agents` and `envs`, as openai-agents and V-D4RL's code do."""
    for name in ("agents", "envs"):
        (dest / name).mkdir(parents=True)
        (dest / name / "__init__.py").write_text(f"OWNER = 'dummy-{name}'\n")
    (dest / "pyproject.toml").write_text(
        textwrap.dedent("""\
        [build-system]
        requires = ["setuptools>=70.1"]
        build-backend = "setuptools.build_meta"
        [project]
        name = "dummy-agents-envs"
        version = "1.0"
        [tool.setuptools]
        packages = ["agents", "envs"]
        """)
    )
    return dest


@pytest.fixture(scope="module")
def wheel_and_venv(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("packaging")
    tree = _tree_copy(tmp / "tree")
    pip = [sys.executable, "-m", "pip"]
    _run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp / "dist"), str(tree)], tmp)
    _run(
        [
            *pip,
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp / "dist"),
            str(_dummy_distribution(tmp / "dummy")),
        ],
        tmp,
    )
    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp)
    py = venv / "bin" / "python"
    site = Path(_run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp).strip())
    # this venv's packages as a plain path entry: its .pth files (the editable install's finder) do not run
    base = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    for pth in Path(sysconfig.get_paths()["purelib"]).glob("*.pth"):  # folders its .pth files add (no imports)
        base |= {
            line
            for line in pth.read_text().splitlines()
            if line and not line.startswith("import") and Path(line).is_dir()
        }
    (site / "zz_base_packages.pth").write_text("\n".join(sorted(base)) + "\n")
    dummy = next((tmp / "dist").glob("dummy_agents_envs-*.whl"))
    _run([*pip, "--python", str(py), "install", "--no-deps", "-q", str(dummy)], tmp)
    # a regular (non-editable) install from the tree
    _run([*pip, "--python", str(py), "install", "--no-deps", "--no-build-isolation", "-q", str(tree)], tmp)
    return next((tmp / "dist").glob("taco_rl-*.whl")), venv, tmp


def test_wheel_installs_only_taco_rl_at_the_top(wheel_and_venv):
    wheel, _, _ = wheel_and_venv
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names}
    assert top == {"taco_rl", "taco_rl-0.1.0.dist-info", "taco_rl-gymnasium.pth"}, top
    for module in (
        "taco_rl/__main__.py",
        "taco_rl/agents/taco.py",
        "taco_rl/envs/registry.py",
        "taco_rl/runners/cli.py",
        "taco_rl/runners/data/formats/minari.py",
        "taco_rl/sb3/sac.py",
    ):
        assert module in names
    # the published reference numbers `taco report` reads, as package data (one copy: results/reference links it)
    reference = ROOT / "runners" / "study" / "reference"
    shipped = sorted(p.relative_to(reference).as_posix() for p in reference.rglob("*") if p.is_file())
    assert len(shipped) >= 27 and (ROOT / "results" / "reference").resolve() == reference
    for name in shipped:
        assert f"taco_rl/runners/study/reference/{name}" in names, name
    record = zipfile.ZipFile(wheel).read("taco_rl-0.1.0.dist-info/RECORD").decode()
    assert "taco_rl-gymnasium.pth,sha256=" in record  # pip removes it on uninstall
    entry_points = zipfile.ZipFile(wheel).read("taco_rl-0.1.0.dist-info/entry_points.txt").decode()
    assert "taco = taco_rl.runners.cli:main" in entry_points


def test_installed_beside_top_level_agents_and_envs_both_work(wheel_and_venv):
    _, venv, tmp = wheel_and_venv
    py = str(venv / "bin" / "python")
    out = _run(
        [
            py,
            "-c",
            textwrap.dedent("""\
        import agents, envs
        assert (agents.OWNER, envs.OWNER) == ("dummy-agents", "dummy-envs"), (agents.OWNER, envs.OWNER)
        import taco_rl, taco_rl.agents, taco_rl.envs
        assert "/site-packages/taco_rl/" in taco_rl.agents.__file__, taco_rl.agents.__file__
        import torch
        env = taco_rl.envs.make_env("point_reach", 0, image_size=32)
        obs, _ = env.reset()
        agent = taco_rl.agents.DrQV2(obs.shape, env.action_space.shape[0], hidden_dim=32, feature_dim=16)
        action = agent.act(obs, step=0, eval_mode=True)
        env.step(action)
        print("ok", agents.OWNER, taco_rl.agents.__name__)
        """),
        ],
        tmp,
    )
    assert out.strip() == "ok dummy-agents taco_rl.agents"
    # the command, and python -m taco_rl, train a tiny run from the installed wheel
    run = tmp / "run"
    out = _run(
        [str(venv / "bin" / "taco"), "train", *TINY, f"run_dir={run}", "--no-progress"], tmp, OMP_NUM_THREADS="1"
    )
    assert (run / "eval.csv").read_text().count("\n") >= 2, out
    assert "taco train" in _run([py, "-m", "taco_rl", "train", "--help"], tmp)


def test_installed_report_finds_the_published_references(wheel_and_venv):
    _, venv, tmp = wheel_and_venv
    run = tmp / "cheetah_run_run"
    run.mkdir()
    (run / "config.yaml").write_text("task: cheetah_run\nseed: 1\nagent: drqv2\naux: none\nframes: 1000000\n")
    (run / "eval.csv").write_text("frame,episode_return\n0,1.5\n500000,400\n1000000,700\n")
    out = tmp / "report"
    _run(
        [str(venv / "bin" / "taco"), "report", str(run), "--out", str(out), "--reps", "20", "--reference", "drqv2"], tmp
    )
    md = (out / "report.md").read_text()
    assert "| cheetah_run | drqv2-none | 1 | 700.0 +- n/a | 700.0 [700.0, 700.0] | 729 (DrQ-v2) |" in md
    compared = (out / "reference_drqv2.csv").read_text().splitlines()
    assert [line.split(",")[2] for line in compared[1:]] == ["0", "500000", "1000000"]


@pytest.mark.parametrize("where", ["wheel", "editable"])
def test_gymnasium_make_needs_no_import_of_ours(wheel_and_venv, where):
    _, venv, tmp = wheel_and_venv
    py = str(venv / "bin" / "python") if where == "wheel" else sys.executable
    out = _run(
        [
            py,
            "-c",
            textwrap.dedent("""\
        import sys
        early = sorted(m for m in sys.modules if m.startswith("taco_rl"))
        assert early == ["taco_rl", "taco_rl._gymnasium_hook"], early  # the start-up hook only
        import gymnasium
        env = gymnasium.make("taco/point_reach-v0", image_size=32)
        obs, _ = env.reset(seed=3)
        env.step(env.action_space.sample())
        print(type(env.unwrapped).__module__, obs.shape)
        """),
        ],
        tmp,
    )
    assert out.split() == ["taco_rl.envs.point", "(9,", "32,", "32)"]
