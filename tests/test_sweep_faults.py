"""A sweep driver killed with SIGKILL takes its runs with it, and a rerun at once resumes them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from taco_rl.runners.cli import main

sys.path.insert(0, str(Path(__file__).parent))
from test_sweep import TINY, _cmdline, _state, _wait_mid_run, _write  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux only")

# a driver that starts one long child from a worker thread (as run_local does) and prints its pid
_DRIVER = """
import subprocess, sys, threading, time
from taco_rl.runners.study.sweep import spawn_child
plain = sys.argv[1] == "plain"
def start():
    argv = [sys.executable, "-c", "import time; time.sleep(120)"]
    proc = subprocess.Popen(argv) if plain else spawn_child(argv)
    print(proc.pid, flush=True)
    proc.wait()
threading.Thread(target=start).start()
time.sleep(120)
"""


def _alive(pid: int) -> bool:
    try:
        state = [line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("State:")]
    except OSError:
        return False
    return bool(state) and "Z" not in state[0].split()[1]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def _child_after_driver_kill(kind: str, wait: float) -> tuple[int, bool]:
    driver = subprocess.Popen([sys.executable, "-c", _DRIVER, kind], stdout=subprocess.PIPE, text=True, env=_env())
    try:
        child = int(driver.stdout.readline())
        time.sleep(0.3)  # the child is past its start-up
        assert _alive(child)
    finally:
        driver.kill()
        driver.wait()
    deadline = time.time() + wait
    while _alive(child) and time.time() < deadline:
        time.sleep(0.05)
    return child, _alive(child)


def test_children_die_with_a_killed_driver():
    child, alive = _child_after_driver_kill("spawn", 5)
    assert not alive, f"child {child} outlived its SIGKILLed driver"
    orphan, alive = _child_after_driver_kill("plain", 0.5)  # the control: a plain Popen child survives
    try:
        assert alive
    finally:
        os.kill(orphan, signal.SIGKILL)


@pytest.mark.slow
def test_killed_sweep_leaves_no_run_behind_and_a_rerun_resumes(tmp_path):
    budget = 250
    f = _write(
        tmp_path / "tiny.yaml",
        {
            "tasks": ["point_reach"],
            "seeds": [1],
            "overrides": {**TINY, "frames": budget, "root": str(tmp_path / "runs")},
        },
    )
    from taco_rl.runners.study.sweep import load_sweep

    (run,) = load_sweep(f).runs
    driver = subprocess.Popen(
        [sys.executable, "-m", "taco_rl.runners.cli", "sweep", str(f)],
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_mid_run(run.run_dir, budget, lambda: driver.poll() is None)
        runs = [
            int(p.name)
            for p in Path("/proc").iterdir()
            if p.name.isdigit()
            and f"root={tmp_path / 'runs'}" in _cmdline(int(p.name))
            and " sweep " not in _cmdline(int(p.name))
        ]
        assert len(runs) == 1, [_cmdline(p) for p in runs]
    finally:
        driver.kill()
        driver.wait()
    deadline = time.time() + 5
    while _alive(runs[0]) and time.time() < deadline:
        time.sleep(0.05)
    assert not _alive(runs[0]), "the run kept training after its sweep was killed"
    assert _state(run.run_dir)["counters"]["frame"] < budget
    assert main(["sweep", str(f)]) == 0  # at once: nothing holds the run directory
    assert "resuming" in (run.run_dir / "sweep.log").read_text()
    assert _state(run.run_dir)["counters"]["frame"] == budget
