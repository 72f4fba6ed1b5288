"""`taco report` on synthetic eval logs: numbers against hand-computed values, unfinished runs, figures."""

from __future__ import annotations

import csv
import itertools

import numpy as np
import pytest
import yaml
from matplotlib.image import imread

from taco_rl.runners.cli import main
from taco_rl.runners.core.config import resolve, to_yaml
from taco_rl.runners.study import stats
from taco_rl.runners.study.report import ReportError, collect, report

BUDGET = 1_000_000
EVALS = (0, 500_000, 1_000_000)
# final returns per (task, aux): four seeds each
FINAL = {
    ("cheetah_run", "taco"): [800.0, 700.0, 900.0, 100.0],
    ("cheetah_run", "none"): [600.0, 650.0, 500.0, 700.0],
    ("point_reach", "taco"): [40.0, 45.0, 30.0, 35.0],
    ("point_reach", "none"): [30.0, 35.0, 20.0, 45.0],
}


def _make_run(root, task, aux, seed, final, reached=BUDGET, video=False):
    cfg = resolve([f"task={task}", f"aux={aux}", f"seed={seed}", f"frames={BUDGET}", f"root={root}"])
    run_dir = root / task / aux / f"seed{seed}"
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(to_yaml(cfg))
    with (run_dir / "eval.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["frame", "step", "episode_return", "return_std", "episode_length", "episodes"])
        for frame in EVALS:
            if frame <= reached:
                w.writerow([frame, frame // 2, final * frame / BUDGET, 0.0, 500, 10])
    if video:
        (run_dir / "videos").mkdir()
        for frame in (500_000, 1_000_000):
            (run_dir / "videos" / f"eval_{frame:09d}.mp4").write_bytes(f"video {frame}".encode())
    return run_dir


@pytest.fixture
def runs(tmp_path):
    root = tmp_path / "runs"
    for (task, aux), finals in FINAL.items():
        for seed, final in enumerate(finals, 1):
            _make_run(root, task, aux, seed, final, video=(seed == 1))
    # a fifth taco seed on cheetah stopped half-way: listed, never averaged
    _make_run(root, "cheetah_run", "taco", 5, 1000.0, reached=500_000)
    return root


def _rows(path):
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _exact_bootstrap_ci(x, stat):
    """The bootstrap distribution enumerated over all n^n equally likely resamples."""
    x = np.asarray(x)
    values = [stat(x[list(idx)]) for idx in itertools.product(range(len(x)), repeat=len(x))]
    return np.percentile(values, [2.5, 97.5])


def test_report_numbers_by_hand(runs, tmp_path):
    out = tmp_path / "report"
    md = report([str(runs)], out, reps=4000, seed=0, compare=["drqv2-taco", "drqv2-none"]).read_text()
    rows = {(r["task"], r["variant"]): r for r in _rows(out / "per_task.csv")}
    assert set(rows) == {
        ("cheetah_run", "drqv2-taco"),
        ("cheetah_run", "drqv2-none"),
        ("point_reach", "drqv2-taco"),
        ("point_reach", "drqv2-none"),
    }
    taco = rows[("cheetah_run", "drqv2-taco")]
    assert taco["runs"] == "4" and taco["seeds"] == "1 2 3 4"  # seed 5 unfinished
    assert float(taco["mean"]) == pytest.approx(625.0)
    assert float(taco["std"]) == pytest.approx(np.std([800, 700, 900, 100], ddof=1))
    assert float(taco["iqm"]) == pytest.approx(750.0)  # middle two of 100, 700, 800, 900
    low, high = _exact_bootstrap_ci([800, 700, 900, 100], stats.iqm)
    assert float(taco["iqm_low"]) == pytest.approx(low, abs=30) and float(taco["iqm_high"]) == pytest.approx(
        high, abs=30
    )
    assert taco["paper"] == "821 (TACO)" and rows[("cheetah_run", "drqv2-none")]["paper"] == "729 (DrQ-v2)"
    assert rows[("point_reach", "drqv2-taco")]["paper"] == ""

    agg = {r["variant"]: r for r in _rows(out / "aggregate.csv")}
    # normalised: cheetah / 1000, point_reach / 50
    t = np.array([0.8, 0.7, 0.9, 0.1, 0.8, 0.9, 0.6, 0.7])
    assert float(agg["drqv2-taco"]["IQM"]) == pytest.approx(np.mean(np.sort(t)[2:6]))
    # rliable: mean and median over tasks of the task means (cheetah 0.625, point_reach 0.75)
    assert float(agg["drqv2-taco"]["mean"]) == pytest.approx((0.625 + 0.75) / 2)
    assert float(agg["drqv2-taco"]["median"]) == pytest.approx(0.6875) != np.median(t)
    assert float(agg["drqv2-taco"]["optimality_gap"]) == pytest.approx(np.mean(1 - t))
    assert agg["drqv2-taco"]["tasks"] == "2" and agg["drqv2-taco"]["runs"] == "8"
    assert (
        float(agg["drqv2-taco"]["IQM_low"]) <= float(agg["drqv2-taco"]["IQM"]) <= float(agg["drqv2-taco"]["IQM_high"])
    )

    # P(taco > none), ties count half. cheetah: 800 and 900 beat all four, 700 beats three and ties one,
    # 100 beats none: 11.5/16. point_reach: 40 -> 3, 45 -> 3 + tie, 30 -> 1 + tie, 35 -> 2 + tie: 10.5/16
    (poi,) = _rows(out / "improvement.csv")
    assert (poi["x"], poi["y"], poi["tasks"]) == ("drqv2-taco", "drqv2-none", "2")
    assert float(poi["probability"]) == pytest.approx((11.5 / 16 + 10.5 / 16) / 2)
    assert float(poi["low"]) <= float(poi["probability"]) <= float(poi["high"])

    assert "cheetah_run / drqv2-taco / seed 5: reached 500,000 of 1,000,000" in md
    assert "| cheetah_run | drqv2-taco | 4 | 625.0 +- " in md and "821 (TACO)" in md


def test_curves_and_figures(runs, tmp_path):
    out = tmp_path / "report"
    md = report([str(runs)], out, reps=200).read_text()
    curve = _rows(out / "curves_cheetah_run.csv")
    assert {r["variant"] for r in curve} == {"drqv2-taco", "drqv2-none"}
    taco = [r for r in curve if r["variant"] == "drqv2-taco"]
    assert [int(float(r["frame"])) for r in taco] == list(EVALS) and {r["seeds"] for r in taco} == {"4"}
    assert float(taco[1]["episode_return"]) == pytest.approx(312.5)  # half of 625: the unfinished seed is left out
    for name in ("curves_cheetah_run.png", "curves_point_reach.png", "curves_aggregate.png"):
        image = imread(out / name)
        assert image.shape[0] > 100 and image.shape[1] > 100 and image.std() > 0
        assert f"]({name})" in md
    # each task and variant's last video is copied and linked
    assert (out / "videos" / "cheetah_run__drqv2-taco.mp4").read_bytes() == b"video 1000000"
    assert "(videos/cheetah_run__drqv2-taco.mp4)" in md


def test_earlier_frame_and_compare(runs, tmp_path):
    out = tmp_path / "report"
    md = report([str(runs / "*" / "*" / "*")], out, frame=500_000, compare=["drqv2-none", "drqv2-taco"]).read_text()
    rows = {(r["task"], r["variant"]): r for r in _rows(out / "per_task.csv")}
    assert rows[("cheetah_run", "drqv2-taco")]["runs"] == "5"  # the half-way seed counts at 500k
    assert float(rows[("cheetah_run", "drqv2-taco")]["mean"]) == pytest.approx((625 * 4 + 1000) / 2 / 5)
    assert "P(drqv2-none > drqv2-taco)" in md and "## Unfinished runs" in md and "\nnone\n" in md


def test_sweep_file_labels_runs(tmp_path):
    root = tmp_path / "runs"
    sweep = tmp_path / "s.yaml"
    sweep.write_text(
        yaml.safe_dump(
            {
                "tasks": ["point_reach"],
                "seeds": [1, 2],
                "overrides": {"root": str(root)},
                "variants": {"big_k": {"aux": "taco", "taco_k": 5}, "base": {"aux": "none"}},
                "compare": ["big_k", "base"],
            },
            sort_keys=False,
        )
    )
    from taco_rl.runners.study.sweep import load_sweep

    for run in load_sweep(sweep).runs:  # pretend the sweep ran: logs in the derived run dirs
        run.run_dir.mkdir(parents=True)
        (run.run_dir / "config.yaml").write_text(to_yaml(run.cfg))
        (run.run_dir / "eval.csv").write_text(f"frame,step,episode_return\n0,0,1\n{run.budget},1,{10 * run.seed}\n")
    runs, compare = collect([str(sweep)])
    assert {r.label for r in runs} == {"big_k", "base"} and compare == ("big_k", "base")
    md = report([str(sweep)], tmp_path / "out").read_text()
    assert "P(big_k > base) over 1 task(s): 0.500" in md


def test_report_errors(runs, tmp_path, capsys):
    with pytest.raises(ReportError, match="matches no path"):
        report([str(tmp_path / "nothing*")], tmp_path / "o")
    with pytest.raises(ReportError, match="no run has reached frame 2000000"):
        report([str(runs)], tmp_path / "o", frame=2_000_000)
    with pytest.raises(ReportError, match="no 'success' column"):
        report([str(runs)], tmp_path / "o", metric="success")
    with pytest.raises(ReportError, match="not a variant here"):
        report([str(runs)], tmp_path / "o", compare=["drqv2-taco", "sac-taco"])
    assert main(["report", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.startswith("taco: error: ")
