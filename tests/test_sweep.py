"""Sweep files: validation, expansion, the shipped ablations, and tiny point_reach sweeps run locally and
on a one-node Ray cluster (a run killed mid-way resumes and ends equal to one never killed)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
import yaml

from taco_rl.runners.cli import main
from taco_rl.runners.study.sweep import SweepError, load_sweep, run_local

ROOT = Path(__file__).resolve().parent.parent
TINY = {
    "image_size": 16,
    "hidden_dim": 32,
    "batch_size": 16,
    "seed_frames": 50,
    "expl_steps": 25,
    "eval_episodes": 1,
    "save_video": False,
    "eval_every_frames": 100,
    "checkpoint_every_frames": 100,
}


def _write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


# ---------------------------------------------------------------- expansion and validation
def test_grid_expands_tasks_seeds_grid_and_variants(tmp_path):
    f = _write(
        tmp_path / "s.yaml",
        {
            "tasks": ["point_reach", "cartpole_swingup"],
            "seeds": [1, 2],
            "overrides": {"root": str(tmp_path / "r")},
            "grid": {"taco_k": [1, 3]},
            "variants": {"taco": {"aux": "taco"}, "curl": {"aux": "curl", "lr": 3e-4}},
            "resources": {"cpus": 2, "gpus": 0.25},
            "compare": ["taco taco_k=3", "taco taco_k=1"],
        },
    )
    sweep = load_sweep(f, ["frames=5000"])
    assert len(sweep.runs) == 2 * 2 * 2 * 2
    assert sweep.labels == ["taco taco_k=1", "taco taco_k=3", "curl taco_k=1", "curl taco_k=3"]
    assert (sweep.cpus, sweep.gpus, sweep.retries) == (2.0, 0.25, 3)
    run = next(r for r in sweep.runs if r.label == "curl taco_k=3" and r.task == "cartpole_swingup" and r.seed == 2)
    assert (run.cfg.aux, run.cfg.lr, run.cfg.taco_k, run.cfg.frames, run.cfg.seed) == ("curl", 3e-4, 3, 5000, 2)
    assert run.run_dir.is_relative_to(tmp_path / "r") and run.budget == 5000
    assert run.argv()[:4] == ["taco", "train", "task=cartpole_swingup", "seed=2"]
    assert len({r.run_dir for r in sweep.runs}) == len(sweep.runs)


def test_identical_runs_of_two_variants_run_once(tmp_path):
    f = _write(
        tmp_path / "s.yaml",
        {
            "tasks": ["point_reach"],
            "seeds": [1],
            "overrides": {"root": str(tmp_path)},
            "variants": {"a": {"aux": "taco"}, "b": {"aux": "taco", "taco_k": 3}},
        },
    )
    sweep = load_sweep(f)
    assert len(sweep.runs) == 1 and sweep.runs[0].labels == ["a", "b"]


def test_task_placeholder_in_values(tmp_path):
    f = _write(
        tmp_path / "s.yaml", {"tasks": ["point_reach"], "seeds": [1], "overrides": {"root": str(tmp_path / "{task}")}}
    )
    assert load_sweep(f).runs[0].run_dir.is_relative_to(tmp_path / "point_reach")


@pytest.mark.parametrize(
    "data,match",
    [
        (
            {"tasks": ["point_reach"], "seeds": [1], "overides": {}},
            "unknown sweep key 'overides'; did you mean overrides",
        ),
        ({"tasks": [], "seeds": [1]}, "`tasks:` must be a non-empty list"),
        ({"tasks": ["point_reach"], "seeds": []}, "`seeds:` must be a non-empty list of integers"),
        ({"tasks": ["point_reach"], "seeds": ["one"]}, "`seeds:` must be a non-empty list of integers"),
        ({"tasks": ["point_reach"], "seeds": [1], "grid": {"taco_k": []}}, "grid taco_k must be a non-empty list"),
        ({"tasks": ["point_reach"], "seeds": [1], "variants": {}}, "`variants:` must be a non-empty mapping"),
        (
            {"tasks": ["point_reach"], "seeds": [1], "variants": {"x": {"tacok": 3}}},
            "variant 'x': unknown config key 'tacok'; did you mean taco_k",
        ),
        ({"tasks": ["point_reach"], "seeds": [1], "overrides": {"batch_size": "big"}}, "bad value for batch_size"),
        (
            {"tasks": ["point_reach"], "seeds": [1], "variants": {"x": {"batch_size": 2.5}}},
            "variant x on point_reach: bad value for batch_size",
        ),
        ({"tasks": ["point_reach"], "seeds": [1], "overrides": {"fast_render": "maybe"}}, "bad value for fast_render"),
        ({"tasks": ["point_reach"], "seeds": [1], "overrides": {"lr": [1, 2]}}, "lr must be a single value"),
        ({"tasks": ["point_reach"], "seeds": [1], "overrides": {"seed": 3}}, "set seed through the top-level"),
        ({"tasks": ["point_reach"], "seeds": [1], "variants": {"x": {"run_dir": "a"}}}, "run_dir would put every run"),
        (
            {"tasks": ["point_reach"], "seeds": [1], "command": "offline", "overrides": {"updates": "many"}},
            "bad value for updates",
        ),
        (
            {"tasks": ["point_reach"], "seeds": [1], "command": "offline", "overrides": {"frames": 5}},
            "'frames' is an online setting",
        ),
        ({"tasks": ["point_rech"], "seeds": [1]}, "point_reach"),
        ({"tasks": ["point_reach"], "seeds": [1], "command": "evaluate"}, "command 'evaluate' is not available"),
        (
            {"tasks": ["point_reach"], "seeds": [1], "resources": {"gpu": 1}},
            "unknown config key 'gpu'; did you mean gpus",
        ),
        ({"tasks": ["point_reach"], "seeds": [1], "resources": {"cpus": 0}}, "cpus must be a positive number"),
        ({"tasks": ["point_reach"], "seeds": [1], "variants": {"a": {}}, "compare": ["a", "b"]}, "'b', which is not"),
    ],
)
def test_bad_sweep_files_rejected_before_any_run(tmp_path, capsys, data, match):
    root = tmp_path / "runs"
    data = {**data, "overrides": {"root": str(root), **data.get("overrides", {})}} if "overides" not in data else data
    f = _write(tmp_path / "bad.yaml", data)
    with pytest.raises(SweepError, match=match):
        load_sweep(f)
    assert main(["sweep", str(f)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("taco: error: ") and err.count("\n") == 1
    assert not root.exists()  # nothing started


def test_bad_files_and_overrides(tmp_path, capsys):
    assert main(["sweep", str(tmp_path / "missing.yaml")]) == 2
    assert "cannot read sweep file" in capsys.readouterr().err
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    assert main(["sweep", str(tmp_path / "list.yaml")]) == 2
    assert "expected a mapping" in capsys.readouterr().err
    f = _write(tmp_path / "ok.yaml", {"tasks": ["point_reach"], "seeds": [1]})
    assert main(["sweep", str(f), "lrr=1", "--dry-run"]) == 2
    assert "command line: unknown config key 'lrr'; did you mean lr" in capsys.readouterr().err
    assert main(["sweep", str(f), "seed=4", "--dry-run"]) == 2
    assert "set tasks and seeds in the sweep file" in capsys.readouterr().err


# ---------------------------------------------------------------- the shipped sweep files
SHIPPED = sorted((ROOT / "ablations").glob("*.yaml"))


def test_every_spec9_ablation_is_shipped():
    names = {p.stem for p in SHIPPED}
    assert {
        "benchmark",
        "taco_k",
        "action_encoder",
        "curl_term",
        "reward_term",
        "latent_critic",
        "drqv2_batch",
        "sac_vs_drqv2",
        "offline",
    } <= names


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_sweep_files_dry_run(path, tmp_path, capsys):
    sweep = load_sweep(path, [f"root={tmp_path}"])
    assert sweep.runs and len(sweep.compare) == 2
    assert main(["sweep", str(path), f"root={tmp_path}", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"{len(sweep.runs)} runs" in out and out.count("[new]") == len(sweep.runs)
    assert not any(tmp_path.iterdir())  # a dry run writes nothing


def test_shipped_ablations_set_what_they_say():
    def by_label(name: str) -> dict[str, list]:
        sweep = load_sweep(ROOT / "ablations" / name)
        return {lab: [r.cfg for r in sweep.runs if lab in r.labels] for lab in sweep.labels}

    k = by_label("taco_k.yaml")
    assert {lab: {c.taco_k for c in cs} for lab, cs in k.items()} == {f"taco_k={v}": {v} for v in (1, 3, 5)}
    assert all(c.aux == "taco" and c.batch_size == 1024 for cs in k.values() for c in cs)
    assert {c.curl_weight for c in by_label("curl_term.yaml")["without_curl"]} == {0.0}
    assert {c.reward_weight for c in by_label("reward_term.yaml")["without_reward"]} == {0.0}
    assert {c.action_encoder for c in by_label("action_encoder.yaml")["raw_actions"]} == {False}
    assert {c.latent_critic for c in by_label("latent_critic.yaml")["raw_critic"]} == {False}
    b = by_label("drqv2_batch.yaml")
    assert {(c.aux, c.batch_size) for c in b["drqv2_batch1024"]} == {("none", 1024)}
    s = by_label("sac_vs_drqv2.yaml")
    assert {(c.agent, c.aux, c.action_repeat) for c in s["sac_taco"]} == {("sac", "taco", 2)}
    off = load_sweep(ROOT / "ablations" / "offline.yaml")
    assert off.command.name == "offline" and {(r.cfg.agent, r.cfg.aux) for r in off.runs} == {
        (a, x) for a in ("bc", "td3bc", "cql", "iql") for x in ("none", "taco")
    }
    assert all(Path(r.cfg.dataset).is_absolute() and r.task in r.cfg.dataset for r in off.runs)
    bench = load_sweep(ROOT / "ablations" / "benchmark.yaml")
    assert len({r.task for r in bench.runs}) == 9 and {r.seed for r in bench.runs} == {1, 2, 3, 4, 5}
    # the full-TACO runs of different ablation files are the same run directories (computed once)
    full = {r.run_dir for r in load_sweep(ROOT / "ablations" / "curl_term.yaml").runs if "with_curl" in r.labels}
    assert full == {r.run_dir for r in load_sweep(ROOT / "ablations" / "taco_k.yaml").runs if "taco_k=3" in r.labels}


# ---------------------------------------------------------------- running sweeps
def test_local_worker_slots_take_gpus_in_turn(monkeypatch):
    from taco_rl.runners.study.sweep import gpu_for_slot, visible_gpus

    assert [gpu_for_slot(s, 0.5, ["0", "1"]) for s in range(4)] == ["0", "1", "0", "1"]
    assert [gpu_for_slot(s, 1, ["2", "5", "7"]) for s in range(4)] == ["2", "5", "7", "2"]
    assert gpu_for_slot(1, 0.0, ["0", "1"]) is None  # CPU runs: left alone
    assert gpu_for_slot(1, 1.0, ["0"]) is None  # one GPU: every run on it
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,4")
    assert visible_gpus() == ["3", "4"]


# a run's output as `taco train --no-progress` writes it, a line split across two writes; it goes on
# once the test has been shown its first evaluation (or after 60 s, when it is not shown)
_RUN_OUTPUT = """
import select, sys, time
w = sys.stdout.write
w("resuming /r at frame 100\\n"); sys.stdout.flush()
w("eval | frame 100 | step 50 | ret"); sys.stdout.flush(); time.sleep(0.2)
w("urn 1.5 +- 0.0 over 1 episodes\\nsome warning\\n"); sys.stdout.flush()
select.select([sys.stdin], [], [], 60)
w("eval | frame 200 | step 100 | return 2.5 +- 0.0 over 1 episodes\\ndone: /r\\n")
w("taco: error: the last line"); sys.exit(3)
"""


def test_a_local_run_shows_its_evaluations_as_they_come(tmp_path):
    from taco_rl.runners.study.sweep import follow

    log_path = tmp_path / "sweep.log"
    log_path.write_bytes(b"eval | an earlier process's line\n")
    shown: list[tuple[int | None, str]] = []
    with log_path.open("ab") as log:
        offset = log.tell()
        proc = subprocess.Popen([sys.executable, "-c", _RUN_OUTPUT], stdout=log, stdin=subprocess.PIPE)

        def show(line: str) -> None:
            shown.append((proc.poll(), line))
            if line.startswith("eval | frame 100"):  # the run waits for this before it goes on
                proc.stdin.write(b"go\n")
                proc.stdin.flush()

        rc = follow(proc, log_path, offset, show, every=0.1)
    assert rc == 3
    assert [line for _, line in shown] == [
        "resuming /r at frame 100",
        "eval | frame 100 | step 50 | return 1.5 +- 0.0 over 1 episodes",
        "eval | frame 200 | step 100 | return 2.5 +- 0.0 over 1 episodes",
        "taco: error: the last line",  # no newline: shown once the run is over
    ]
    assert shown[1][0] is None and shown[-1][0] == 3  # the first evaluation while the run went on


def test_ray_address_nobody_listens_on(tmp_path, capsys):
    import socket

    with socket.socket() as s:  # a port that was free a moment ago
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    f = _write(
        tmp_path / "s.yaml", {"tasks": ["point_reach"], "seeds": [1], "overrides": {"root": str(tmp_path / "r")}}
    )
    t0 = time.time()
    assert main(["sweep", str(f), "--backend", "ray", "--address", f"127.0.0.1:{port}"]) == 2
    assert f"cannot reach a Ray cluster at 127.0.0.1:{port}" in capsys.readouterr().err and time.time() - t0 < 30
    assert not (tmp_path / "r").exists()


def test_offline_runs_plug_in(tmp_path, capsys):
    from taco_rl.runners.study.report import report
    from taco_rl.runners.study.sweep import execute
    from tests.offline_data import scripted_dataset

    scripted_dataset(tmp_path / "data" / "point_reach", episodes=4, image_size=16)
    f = _write(
        tmp_path / "off.yaml",
        {
            "command": "offline",
            "tasks": ["point_reach"],
            "seeds": [1],
            "overrides": {
                "image_size": 16,
                "hidden_dim": 32,
                "batch_size": 16,
                "eval_episodes": 1,
                "save_video": False,
                "updates": 20,
                "eval_every_updates": 10,
                "root": str(tmp_path / "runs"),
                "dataset": str(tmp_path / "data" / "{task}"),
            },
            "grid": {"agent": ["bc", "td3bc"]},
        },
    )
    sweep = load_sweep(f)
    assert [r.argv()[:2] for r in sweep.runs] == [["taco", "offline"]] * 2 and {r.budget for r in sweep.runs} == {20}
    assert {r.cfg.dataset for r in sweep.runs} == {str(tmp_path / "data" / "point_reach")}
    for run in sweep.runs:  # what a Ray task does, in this process
        assert Path(execute(run.command, run.overrides)) == run.run_dir
    assert main(["sweep", str(f), "--dry-run"]) == 0
    assert capsys.readouterr().out.count("[finished]") == 2
    assert main(["sweep", str(f)]) == 0
    assert "2 of 2 runs already finished; running 0" in capsys.readouterr().out
    md = report([str(f)], tmp_path / "report", reps=100).read_text()
    assert "# Report at 20 updates" in md and "| point_reach | agent=td3bc | 1 |" in md


def _tiny_sweep(tmp_path: Path, frames: int) -> Path:
    """Two identical runs in two roots: `main` is killed mid-way, `twin` never is."""
    return _write(
        tmp_path / "tiny.yaml",
        {
            "tasks": ["point_reach"],
            "seeds": [1],
            "overrides": {**TINY, "frames": frames},
            "variants": {"main": {"root": str(tmp_path / "main")}, "twin": {"root": str(tmp_path / "twin")}},
            "resources": {"cpus": 1},
            "retries": 2,
        },
    )


def _state(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoint" / "state.pt", weights_only=True)


def _wait_mid_run(run_dir: Path, budget: int, alive, timeout: float = 120) -> None:
    """Block until the run has a checkpoint before its budget."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        if (run_dir / "checkpoint" / "state.pt").exists():
            try:
                frame = _state(run_dir)["counters"]["frame"]
            except Exception:  # being replaced right now
                frame = -1
            if 0 < frame < budget:
                return
        assert alive(), "the sweep ended before the run checkpointed mid-way"
        time.sleep(0.02)
    raise AssertionError("the run never checkpointed mid-way")


def _descendants(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        for child in map(int, children):
            out += [child, *_descendants(child)]
    return out


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _holds_open(pid: int, path: Path) -> bool:
    try:
        return any(os.readlink(fd) == str(path) for fd in Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return False


def _assert_same_params(a: Path, b: Path) -> None:
    sa, sb = _state(a), _state(b)
    assert sa["counters"] == sb["counters"]

    def flat(d, p=""):
        if not any(isinstance(v, dict) for v in d.values()):
            return {f"{p}{k}": v for k, v in d.items()}
        return {
            k2: v2
            for k, v in d.items()
            for k2, v2 in (flat(v, f"{p}{k}.") if isinstance(v, dict) else {f"{p}{k}": v}).items()
        }

    fa, fb = flat(sa["agent"]), flat(sb["agent"])
    assert fa.keys() == fb.keys()
    for k in fa:
        if isinstance(fa[k], torch.Tensor):
            assert torch.equal(fa[k], fb[k]), k
    assert (a / "eval.csv").read_text() == (b / "eval.csv").read_text()


def _sweep_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "taco_rl.runners.cli", "sweep", *args]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


@pytest.mark.slow
def test_local_sweep_finishes_skips_and_resumes_a_killed_run(tmp_path, monkeypatch, capsys):
    budget = 250
    f = _tiny_sweep(tmp_path, budget)
    sweep = load_sweep(f)
    main_dir = next(r.run_dir for r in sweep.runs if r.label == "main")
    twin_dir = next(r.run_dir for r in sweep.runs if r.label == "twin")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    lines, failed = [], []
    driver = threading.Thread(target=lambda: failed.extend(run_local(sweep, workers=2, say=lines.append)))
    driver.start()
    _wait_mid_run(main_dir, budget, driver.is_alive)
    # the `taco train` subprocess of the main run (its command line names its root)
    victim = [p for p in _descendants(os.getpid()) if f"root={tmp_path / 'main'}" in _cmdline(p)]
    assert len(victim) == 1
    os.kill(victim[0], signal.SIGKILL)
    driver.join(timeout=300)
    assert [r.run_dir for r in failed] == [main_dir] and any("FAILED (exit -9" in line for line in lines)
    # the console said where each run's output goes, and showed the runs' evaluations as they came
    assert f"started | main | point_reach seed 1 | output in {main_dir / 'sweep.log'}" in lines
    assert "  twin | point_reach seed 1 | eval | frame 100 | step 100 | return" in "\n".join(lines)
    assert _state(main_dir)["counters"]["frame"] < budget
    assert _state(twin_dir)["counters"]["frame"] == budget

    assert main(["sweep", str(f), "--workers", "2"]) == 0
    assert "1 of 2 runs already finished; running 1" in capsys.readouterr().out
    assert "resuming" in (main_dir / "sweep.log").read_text()
    _assert_same_params(main_dir, twin_dir)

    stamp = (main_dir / "checkpoint" / "state.pt").stat().st_mtime_ns
    assert main(["sweep", str(f)]) == 0  # everything finished: nothing starts
    assert (main_dir / "checkpoint" / "state.pt").stat().st_mtime_ns == stamp
    assert main(["sweep", str(f), "--dry-run"]) == 0


@pytest.mark.slow
def test_ray_sweep_on_a_local_cluster_survives_a_killed_worker(tmp_path, monkeypatch):
    ray = pytest.importorskip("ray")
    budget = 250
    f = _tiny_sweep(tmp_path, budget)
    sweep = load_sweep(f)
    main_dir = next(r.run_dir for r in sweep.runs if r.label == "main")
    twin_dir = next(r.run_dir for r in sweep.runs if r.label == "twin")
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    # a cluster of its own: ray.init() without an address joins the last one `ray start` recorded on this
    # machine (whose workers are not this test's children, and may run other code)
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        address = ray.get_runtime_context().gcs_address
        proc = subprocess.Popen(
            _sweep_cmd(str(f), "--backend", "ray", "--address", address),
            env=_env(),
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        _wait_mid_run(main_dir, budget, lambda: proc.poll() is None)
        # the Ray worker (titled by its task) running the main run: it holds the run directory's lock open
        victim = [
            p
            for p in _descendants(os.getpid())
            if _cmdline(p).startswith("ray::taco_run") and _holds_open(p, main_dir / ".lock")
        ]
        assert len(victim) == 1, [_cmdline(p) for p in _descendants(os.getpid())]
        os.kill(victim[0], signal.SIGKILL)
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, out
        assert "0 of 2 runs already finished; submitting 2" in out and "done: 2 runs" in out
        # Ray started the killed run again and it resumed from its checkpoint (worker output reaches the driver)
        resumed = [line for line in out.splitlines() if "resuming" in line]
        assert len(resumed) == 1 and str(main_dir) in resumed[0], out
        _assert_same_params(main_dir, twin_dir)
        assert _state(main_dir)["counters"]["frame"] == budget
        again = subprocess.run(
            _sweep_cmd(str(f), "--backend", "ray", "--address", address),
            env=_env(),
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert again.returncode == 0 and "2 of 2 runs already finished; submitting 0" in again.stdout
        # resources no node has: refused with a clear message, nothing submitted
        big = subprocess.run(
            _sweep_cmd(str(f), f"root={tmp_path / 'big'}", "--backend", "ray", "--address", address, "--gpus", "64"),
            env=_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert big.returncode == 2 and "no node of the Ray cluster has 1 CPU and 64 GPU" in big.stderr
        assert not (tmp_path / "big").exists()
    finally:
        ray.shutdown()
