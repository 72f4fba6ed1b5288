"""`taco report` on synthetic eval logs: numbers against hand-computed values, unfinished runs, figures."""

from __future__ import annotations

import csv
import itertools
import json

import numpy as np
import pytest
import yaml
from matplotlib.image import imread

from taco_rl.envs.tasks import DRQV2, TASK_TABLE, TASKS
from taco_rl.runners.cli import main
from taco_rl.runners.core.config import resolve, to_yaml
from taco_rl.runners.study import published, stats
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


# ---------------------------------------------------------------------------- online and offline clocks
def _make_offline_run(root, task, agent, aux, seed, updates, evals):
    cfg = resolve(
        [f"task={task}", f"agent={agent}", f"aux={aux}", f"seed={seed}", f"updates={updates}", "dataset=data/expert"],
        offline=True,
    )
    run_dir = root / "offline" / f"{agent}-{aux}" / f"seed{seed}"
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(to_yaml(cfg))
    with (run_dir / "eval.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["update", "episode_return", "normalised_return"])
        for update, value in evals:
            w.writerow([update, value, value / 10])
    return run_dir


def _dataset_json(folder, mean, episodes, checksum):
    folder.mkdir(parents=True)
    info = {"task": "point_reach", "episodes": episodes, "return": {"min": 0.0, "mean": mean, "max": 50.0}}
    (folder / "dataset.json").write_text(json.dumps({**info, "checksum": checksum}))
    return folder


def test_offline_runs_are_set_beside_their_datasets_mean_return(tmp_path):
    """Offline runs on two datasets are two variants, each named by its dataset's folder, and each
    per-task row shows the mean return of the data its runs trained on: from the record a run keeps
    in its run directory, else from the dataset.json at its config's path, else n/a."""
    root, data = tmp_path / "runs", tmp_path / "data"
    expert = _dataset_json(data / "pr_expert", 45.0, 20, "sha256:e")
    replay = _dataset_json(data / "pr_replay", 12.5, 40, "sha256:r")

    def offline(name, seed, dataset, final, record=None):
        cfg = resolve(
            ["task=point_reach", "agent=bc", f"seed={seed}", "updates=200", f"dataset={dataset}"], offline=True
        )
        run_dir = root / name
        run_dir.mkdir(parents=True)
        (run_dir / "config.yaml").write_text(to_yaml(cfg))
        (run_dir / "eval.csv").write_text(f"update,episode_return\n0,5.0\n200,{final}\n")
        if record is not None:
            (run_dir / "dataset_info.json").write_text(json.dumps(record))
        return run_dir

    # seed 1 keeps its record (a dataset since moved away: its config's path no longer holds it)
    offline("e1", 1, data / "moved" / "pr_expert", 40.0, json.loads((expert / "dataset.json").read_text()))
    offline("e2", 2, expert, 44.0)  # no record: read from the dataset's folder
    offline("r1", 1, replay, 20.0)
    out = tmp_path / "report"
    md = report([str(root)], out, reps=100).read_text()
    rows = {r["variant"]: r for r in _rows(out / "per_task.csv")}
    assert set(rows) == {"bc-none dataset=pr_expert", "bc-none dataset=pr_replay"}
    assert float(rows["bc-none dataset=pr_expert"]["dataset_return"]) == 45.0
    assert float(rows["bc-none dataset=pr_replay"]["dataset_return"]) == 12.5
    assert "| point_reach | bc-none dataset=pr_expert | 2 | 42.0 +- 2.8 |" in md
    assert "| 45.0 (score 4.5) |" in md and "| 12.5 (score 1.2) |" in md
    assert "| task | variant | seeds | mean +- std | IQM [95% CI] | dataset | paper |" in md

    # a run whose dataset can be found nowhere: its group says n/a, never another group's number
    offline("r2", 2, data / "gone" / "pr_replay", 30.0)
    md = report([str(root)], tmp_path / "r2", reps=100).read_text()
    assert rows_of(tmp_path / "r2", "bc-none dataset=pr_replay")["dataset_return"] == ""
    assert "| n/a |" in md
    # online runs keep the table without the dataset column
    online = _make_online_run(tmp_path / "on", "point_reach", "none", 1, 4000, [(0, 5.0), (4000, 30.0)])
    md = report([str(online)], tmp_path / "r3", reps=100).read_text()
    assert "| task | variant | seeds | mean +- std | IQM [95% CI] | paper |" in md and "dataset" not in md
    assert rows_of(tmp_path / "r3", "drqv2-none")["dataset_return"] == ""


def rows_of(out, variant):
    return next(r for r in _rows(out / "per_task.csv") if r["variant"] == variant)


def _make_online_run(root, task, aux, seed, frames, evals):
    cfg = resolve([f"task={task}", f"aux={aux}", f"seed={seed}", f"frames={frames}"])
    run_dir = root / "online" / task / aux / f"seed{seed}"
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(to_yaml(cfg))
    with (run_dir / "eval.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["frame", "step", "episode_return"])
        for frame, value in evals:
            w.writerow([frame, frame // 2, value])
    return run_dir


def test_online_and_offline_runs_are_reported_on_their_own_clocks(tmp_path):
    """One finished online run (4,000 frames) and one finished offline run (200 of 200 updates): each
    clock has its own section, the offline run is never measured on the online clock, and no
    probability of improvement pairs the two."""
    root = tmp_path / "runs"
    _make_online_run(root, "point_reach", "none", 1, 4000, [(0, 5.0), (2000, 20.0), (4000, 30.0)])
    _make_offline_run(root, "point_reach", "td3bc", "taco", 1, 200, [(0, 4.0), (100, 25.0), (200, 40.0)])
    _make_offline_run(root, "point_reach", "td3bc", "taco", 2, 200, [(0, 6.0), (100, 10.0)])  # unfinished
    out = tmp_path / "report"
    md = report([str(root)], out, reps=100).read_text()
    assert md.startswith("# Report: online runs at 4,000 frames, offline runs at 200 updates\n")
    online, offline = md.split("## Online runs, at 4,000 frames\n")[1].split("## Offline runs, at 200 updates\n")
    assert "| point_reach | drqv2-none | 1 | 30.0 +- n/a |" in online and "td3bc" not in online
    assert "| point_reach | td3bc-taco | 1 | 40.0 +- n/a |" in offline and "drqv2" not in offline
    assert "reached 100 of 200" in offline and "of 4,000" not in md
    assert "P(" not in md and _rows(out / "improvement.csv") == []
    rows = {r["variant"]: r for r in _rows(out / "per_task.csv")}
    assert (rows["drqv2-none"]["clock"], rows["drqv2-none"]["at"]) == ("frame", "4000")
    assert (rows["td3bc-taco"]["clock"], rows["td3bc-taco"]["at"]) == ("update", "200")
    assert {(r["variant"], r["clock"]) for r in _rows(out / "aggregate.csv")} == {
        ("drqv2-none", "frame"),
        ("td3bc-taco", "update"),
    }
    # each clock's curves in its own file, on its own axis
    assert [r["update"] for r in _rows(out / "curves_offline_point_reach.csv")] == ["0.0", "100.0", "200.0"]
    assert [r["frame"] for r in _rows(out / "curves_point_reach.csv")] == ["0.0", "2000.0", "4000.0"]
    assert "](curves_offline_point_reach.png)" in offline and "](curves_point_reach.png)" in online

    # each clock takes its own point: --update scores offline runs (both offline seeds reached 100)
    md = report([str(root)], tmp_path / "r2", frame=2000, update=100, reps=100).read_text()
    assert "online runs at 2,000 frames, offline runs at 100 updates" in md
    assert "| point_reach | td3bc-taco | 2 | 17.5 +- " in md and "| point_reach | drqv2-none | 1 | 20.0 +- " in md
    # the curves stop where the runs are scored
    assert [r["update"] for r in _rows(tmp_path / "r2" / "curves_offline_point_reach.csv")] == ["0.0", "100.0"]
    assert [r["frame"] for r in _rows(tmp_path / "r2" / "curves_point_reach.csv")] == ["0.0", "2000.0"]
    # an explicit comparison across clocks is refused in one line naming both
    with pytest.raises(ReportError, match=r"drqv2-none is scored on frames \(online\) and td3bc-taco on updates"):
        report([str(root)], tmp_path / "r3", compare=["drqv2-none", "td3bc-taco"])
    with pytest.raises(ReportError, match="no offline run here"):
        report([str(root / "online")], tmp_path / "r4", update=100)


def test_offline_only_report_keeps_frame_as_its_update(tmp_path):
    root = tmp_path / "runs"
    _make_offline_run(root, "point_reach", "td3bc", "taco", 1, 200, [(0, 4.0), (100, 25.0), (200, 40.0)])
    md = report([str(root)], tmp_path / "report", frame=100, reps=100).read_text()
    assert md.startswith("# Report at 100 updates\n") and "| point_reach | td3bc-taco | 1 | 25.0 +- n/a |" in md
    with pytest.raises(ReportError, match="no run has reached update 400 .*pass --update"):
        report([str(root)], tmp_path / "r2", update=400)


# ---------------------------------------------------------------------------- published curves
CURVES_DIR = published.REFERENCE_DIR / "drqv2_curves"


def _published_at(task, frame):
    """The published seeds' returns at `frame`, read straight from the shipped CSV."""
    with (CURVES_DIR / f"{task}.csv").open(newline="") as f:
        return np.array([float(r["return"]) for r in csv.DictReader(f) if int(r["frame"]) == frame])


def _grey_band_pixels(png):
    """Pixels of the published band's colour (grey 0.6 at alpha 0.3 over white: 0.88)."""
    image = imread(png)[..., :3]
    return int(np.sum(np.all(np.abs(image - 0.88) < 0.006, axis=-1)))


@pytest.fixture
def runs_beside_published(tmp_path):
    root = tmp_path / "runs"
    sparse = "cartpole_balance_sparse"
    grid = [0, 10_000, 20_000, 30_000, 40_000]
    _make_online_run(root, sparse, "none", 1, 40_000, list(zip(grid, [10.0, 100.0, 300.0, 600.0, 1000.0], strict=True)))
    _make_online_run(root, sparse, "none", 2, 40_000, list(zip(grid, [20.0, 200.0, 500.0, 800.0, 1000.0], strict=True)))
    _make_online_run(root, sparse, "taco", 1, 40_000, [(0, 40.0), (15_000, 300.0), (40_000, 990.0)])
    # walker_walk evaluated off DrQ-v2's 20k grid up to the report's 40k; point_reach was never published
    _make_online_run(
        root, "walker_walk", "none", 1, 40_000, [(f, 50.0) for f in (5_000, 15_000, 25_000, 35_000, 45_000)]
    )
    _make_online_run(root, "point_reach", "none", 1, 40_000, [(0, 10.0), (40_000, 40.0)])
    return root


def test_reference_drqv2_compares_runs_with_the_published_seeds(runs_beside_published, tmp_path):
    out = tmp_path / "report"
    md = report([str(runs_beside_published)], out, reps=100, reference="drqv2").read_text()
    rows = {(r["task"], r["variant"], int(r["frame"])): r for r in _rows(out / "reference_drqv2.csv")}
    sparse = "cartpole_balance_sparse"
    # drqv2-none: its 10k and 30k evaluations are not published frames; 0, 20k and 40k are compared
    assert sorted(f for t, v, f in rows if (t, v) == (sparse, "drqv2-none")) == [0, 20_000, 40_000]
    for frame, ours in ((0, [10.0, 20.0]), (20_000, [300.0, 500.0]), (40_000, [1000.0, 1000.0])):
        theirs, row = _published_at(sparse, frame), rows[(sparse, "drqv2-none", frame)]
        assert theirs.size == 10 and row["published_seeds"] == "10" and row["runs"] == "2"
        assert float(row["runs_mean"]) == pytest.approx(np.mean(ours))
        assert float(row["published_mean"]) == pytest.approx(theirs.mean())
        assert (float(row["published_min"]), float(row["published_max"])) == (theirs.min(), theirs.max())
        below = np.sum(theirs < np.mean(ours)) + 0.5 * np.sum(theirs == np.mean(ours))
        assert float(row["percentile"]) == pytest.approx(100 * below / theirs.size)
    # published at 0: 31.2 to 92.3 (both runs below); at 20k: 156.8 to 1000; at 40k every seed 1000
    assert [rows[(sparse, "drqv2-none", f)]["where"] for f in (0, 20_000, 40_000)] == ["below", "within", "within"]
    assert [rows[(sparse, "drqv2-none", 0)][k] for k in ("runs_below", "runs_within", "runs_above")] == ["2", "0", "0"]
    assert float(rows[(sparse, "drqv2-none", 40_000)]["percentile"]) == 50.0  # ties count half
    assert 0 < float(rows[(sparse, "drqv2-none", 20_000)]["percentile"]) < 100
    # drqv2-taco is set beside the same curve; its 15k evaluation is left out, and said so
    assert sorted(f for t, v, f in rows if (t, v) == (sparse, "drqv2-taco")) == [0, 40_000]
    assert rows[(sparse, "drqv2-taco", 40_000)]["where"] == "below"  # 990 < 1000, every seed's
    assert (
        f"{sparse} / drqv2-taco: 1 of the runs' 3 evaluation frames are not published frames "
        "(every 20,000 frames from 0) and are left out of the comparison: 15,000" in md
    )
    # frames that never line up, and a task DrQ-v2 did not publish
    assert not any(t == "walker_walk" for t, _, _ in rows)
    assert (
        "walker_walk / drqv2-none: the runs' evaluation frames (5,000, 15,000, 25,000, 35,000) do not line up "
        "with DrQ-v2's published frames (every 20,000 frames from 0): nothing compared" in md
    )
    assert "no published DrQ-v2 curve for point_reach" in md and not any(t == "point_reach" for t, _, _ in rows)
    # the markdown table
    r20 = rows[(sparse, "drqv2-none", 20_000)]
    pub20 = _published_at(sparse, 20_000)
    assert (
        f"| {sparse} | drqv2-none | 20,000 | 2 | 400.0 [300.0, 500.0] | {pub20.mean():.1f} [156.8, 1000.0] | 10 "
        f"| within | {float(r20['percentile']):.0f} |" in md
    )
    assert "## Runs vs published DrQ-v2 at the same frames" in md
    # the published band is drawn on the panels that have one, and not without --reference
    band = _grey_band_pixels(out / f"curves_{sparse}.png")
    plain = tmp_path / "plain"
    report([str(runs_beside_published)], plain, reps=100)
    assert band > 2000 > 10 * _grey_band_pixels(plain / f"curves_{sparse}.png")
    assert _grey_band_pixels(out / "curves_point_reach.png") == _grey_band_pixels(plain / "curves_point_reach.png")
    assert not (plain / "reference_drqv2.csv").exists() and "published" not in (plain / "report.md").read_text()


def test_reference_markdown_shows_at_most_ten_frames_per_variant(tmp_path):
    root = tmp_path / "runs"
    frames = list(range(0, 500_001, 20_000))  # 26 published frames
    _make_online_run(root, "cartpole_balance", "none", 1, 500_000, [(f, 500.0) for f in frames])
    md = report([str(root)], tmp_path / "report", reps=50, reference="drqv2").read_text()
    assert len(_rows(tmp_path / "report" / "reference_drqv2.csv")) == 26
    table = md.split("## Runs vs published DrQ-v2 at the same frames")[1]
    shown = [line for line in table.splitlines() if line.startswith("| cartpole_balance | drqv2-none | ")]
    assert len(shown) == 10 and shown[0].split(" | ")[2] == "0" and shown[-1].split(" | ")[2] == "500,000"


def test_reference_name_errors(runs_beside_published, tmp_path, capsys):
    with pytest.raises(ReportError, match="--reference 'drq': expected one of drqv2"):
        report([str(runs_beside_published)], tmp_path / "o", reference="drq")
    assert main(["report", str(runs_beside_published), "--reference", "taco", "--out", str(tmp_path / "o")]) == 2
    assert "--reference 'taco': expected one of drqv2" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["report", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert all(f"NAME: {name} " in help_text for name in published.CURVES) and "--update" in help_text


def test_shipped_reference_data_agree():
    """The SPEC 8 DrQ-v2 numbers in scores.csv are the published curves' seed means; every published
    task's curve reads, with the same frames for every seed."""
    scores = [r for r in published.table("scores.csv") if r["method"] == "DrQ-v2" and r["task"] in TASKS]
    assert len(scores) >= 19
    for r in scores:
        theirs = _published_at(r["task"], int(r["frames"]))
        assert theirs.size >= 8 and round(theirs.mean()) == int(r["score"]), r
    names = sorted(p.stem for p in CURVES_DIR.glob("*.csv"))
    # DrQ-v2 publishes a curve for every task its configs name, and only for those
    assert len(names) == 24 and set(names) == {t for t, spec in TASK_TABLE.items() if DRQV2 in spec.references}
    for name in names:
        curve = published.curve("drqv2", name)
        with (CURVES_DIR / f"{name}.csv").open(newline="") as f:
            rows = list(csv.DictReader(f))
        seeds = {r["seed"] for r in rows}
        assert len(rows) == len(seeds) * len(curve.frames) and curve.seeds == len(seeds), name
        assert curve.frames[0] == 0 and all(len(v) == len(seeds) for v in curve.returns), name
