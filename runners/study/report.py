"""`taco report`: eval logs of many runs -> tables with bootstrap CIs, learning curves, a markdown summary.

Runs are grouped by task and variant. A variant is the sweep-file label when runs come from a sweep
file; for plain run directories it is `<agent>-<aux>` followed by every setting that differs from that
task/agent/aux's defaults (e.g. `drqv2-taco taco_k=5`). Each run is scored at one frame (offline runs:
one update count): its last evaluation at or before that frame. Runs whose logs stop before it are
listed as unfinished and enter no number and no curve.

Outputs in --out: report.md, per_task.csv, aggregate.csv, improvement.csv, curves_<task>.csv/.png,
curves_aggregate.png, videos/ (each task and variant's last eval video).
"""

from __future__ import annotations

import csv
import glob
import io
import math
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from taco_rl.envs.tasks import max_return
from taco_rl.runners.study import stats

RESULTS = Path(__file__).resolve().parents[2] / "results"  # the repository's results/ (reference tables)
# Maximum episode return per task (reward <= 1 per simulator frame): aggregates use score / max.
REFERENCE_METHOD = {("drqv2", "taco"): "TACO", ("drqv2", "none"): "DrQ-v2", ("sac", "none"): "DrQ"}
# offline learners without an aux module, as named in V-D4RL's table (its scores are return / 10)
OFFLINE_REFERENCE_METHOD = {"td3bc": "DrQ+BC", "cql": "CQL", "bc": "BC"}
NINE_TASKS = (
    "quadruped_run",
    "quadruped_walk",
    "hopper_hop",
    "walker_run",
    "cheetah_run",
    "finger_turn_hard",
    "acrobot_swingup",
    "reacher_hard",
    "reach_duplo",
)
_OVERRIDE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


class ReportError(ValueError):
    """Nothing to report, or a run directory that cannot be read."""


@dataclass
class RunLog:
    run_dir: Path
    task: str
    seed: int
    label: str
    config: dict[str, Any]
    x: np.ndarray = field(default_factory=lambda: np.zeros(0))
    y: np.ndarray = field(default_factory=lambda: np.zeros(0))
    xname: str = "frame"

    @property
    def budget(self) -> int:
        return int(self.config.get("updates", self.config.get("frames", 0)))

    @property
    def reached(self) -> int:
        return int(self.x[-1]) if self.x.size else -1

    def score_at(self, at: int) -> float:
        return float(self.y[np.nonzero(self.x <= at)[0][-1]])

    def last_video(self) -> Path | None:
        videos = sorted((self.run_dir / "videos").glob("*.mp4"))
        return videos[-1] if videos else None


# ---------------------------------------------------------------------------- collecting runs
def _read_eval(run: RunLog, metric: str) -> None:
    path = run.run_dir / "eval.csv"
    if not path.exists():
        return
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise ReportError(
            f"{path}, line {line}: not UTF-8 text (byte 0x{raw[e.start]:02x}); the log is damaged: "
            "repair or delete that line, or leave the run out"
        ) from None
    try:
        rows = list(csv.DictReader(io.StringIO(text, newline="")))
    except csv.Error as e:
        raise ReportError(f"{path}: unreadable CSV ({e}); repair the file or leave the run out") from None
    if not rows:
        return
    xname = next((k for k in ("frame", "update", "step") if k in rows[0]), None)
    if xname is None or metric not in rows[0]:
        raise ReportError(f"{path} has no {metric!r} column (columns: {', '.join(rows[0])}); pick one with --metric")
    try:
        pairs = sorted((float(r[xname]), float(r[metric])) for r in rows if r[metric] not in ("", None))
    except ValueError as e:
        raise ReportError(f"{path}: unreadable number ({e})") from None
    run.xname = xname
    run.x = np.array([p[0] for p in pairs])
    run.y = np.array([p[1] for p in pairs])


def _read_config(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "config.yaml"
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise ReportError(f"cannot read {path}: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict) or "task" not in data:
        raise ReportError(f"{path} is not a run config (no task)")
    return data


def _default_label(config: dict[str, Any]) -> tuple[str, list[str]]:
    """`<agent>-<aux>` and the settings that differ from that task/agent/aux/preset's defaults."""
    from taco_rl.runners.core.config import UNHASHED, resolve

    label = f"{config.get('agent')}-{config.get('aux')}"
    try:
        base = resolve([f"{k}={config[k]}" for k in ("task", "agent", "aux", "preset") if config.get(k)])
    except Exception:  # not a `taco train` config (e.g. offline): agent and aux only
        return label, []
    skip = set(UNHASHED) | {"seed", "task", "agent", "aux", "preset"}
    return label, [
        f"{k}={v}" for k, v in sorted(config.items()) if k not in skip and hasattr(base, k) and getattr(base, k) != v
    ]


def collect(items: Sequence[str], metric: str = "episode_return") -> tuple[list[RunLog], tuple[str, ...]]:
    """Run logs for run dirs, globs (folders holding runs are searched) and sweep files; also the
    sweep files' `compare` pair (the last one given)."""
    from taco_rl.runners.study.sweep import load_sweep

    overrides = [i for i in items if _OVERRIDE.match(i) and not Path(i).exists()]
    runs: list[RunLog] = []
    seen: set[tuple[Path, str]] = set()
    compare: tuple[str, ...] = ()
    derived: dict[int, tuple[str, list[str]]] = {}  # runs labelled from their config

    def add(run_dir: Path, label: str | None, config: dict[str, Any] | None = None) -> None:
        run_dir = run_dir.resolve()
        if config is None:
            config = _read_config(run_dir)
        key = label or str(run_dir)
        if (run_dir, key) in seen:
            return
        seen.add((run_dir, key))
        run = RunLog(run_dir, str(config["task"]), int(config.get("seed", 0)), label or "", config)
        if not label:
            derived[id(run)] = _default_label(config)
        _read_eval(run, metric)
        runs.append(run)

    for item in items:
        if item in overrides:
            continue
        if item.endswith((".yaml", ".yml")) and Path(item).is_file():
            sweep = load_sweep(item, overrides)
            compare = sweep.compare or compare
            for planned in sweep.runs:
                import dataclasses

                cfg = planned.cfg  # its resolved config (None in a Run built without one)
                cfg = dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type) else {}
                cfg = _read_config(planned.run_dir) if (planned.run_dir / "config.yaml").exists() else cfg
                for label in planned.labels:
                    add(planned.run_dir, label, cfg)
            continue
        matches = sorted(glob.glob(str(Path(item).expanduser()))) if glob.has_magic(item) else [item]
        if not matches:
            raise ReportError(f"{item!r} matches no path")
        for match in matches:
            path = Path(match)
            if (path / "config.yaml").exists():
                add(path, None)
            elif path.is_dir():
                found = sorted(p.parent for p in path.rglob("config.yaml"))
                if not found and not glob.has_magic(item):
                    raise ReportError(f"{path} holds no run directory (no config.yaml below it)")
                for run_dir in found:
                    add(run_dir, None)
            elif not glob.has_magic(item):
                raise ReportError(f"{path} is not a run directory or a sweep file")
    if not runs:
        raise ReportError(f"no runs found in {' '.join(items)}")
    # settings every config-labelled run shares say nothing about which is which: drop them
    common = set.intersection(*(set(d[1]) for d in derived.values())) if derived else set()
    for run in runs:
        if id(run) in derived:
            prefix, diffs = derived[id(run)]
            run.label = " ".join([prefix, *(d for d in diffs if d not in common)])
    return runs, compare


# ---------------------------------------------------------------------------- numbers
def _references(name: str = "reference_scores.csv") -> list[dict[str, str]]:
    path = RESULTS / name
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _reference(refs: list[dict[str, str]], task: str, config: dict[str, Any], at: int) -> str:
    """The paper's number for this task and the config's method, as a raw return."""
    agent, aux = config.get("agent"), config.get("aux")
    if "dataset" in config:  # offline: V-D4RL's table, matched by the dataset folder's name
        method, kind = OFFLINE_REFERENCE_METHOD.get(str(agent)), Path(str(config["dataset"])).name
        for r in _references("reference_offline.csv") if aux == "none" else []:
            if r["task"] == task and r["method"] == method and r["dataset"] == kind:
                return f"{10 * float(r['score']):.0f} ({method}, V-D4RL {kind}: {r['score']} x 10)"
        return ""
    method = REFERENCE_METHOD.get((str(agent), str(aux)))
    for r in refs:
        if r["task"] == task and r["method"] == method and int(r["frames"]) == at:
            return f"{float(r['score']):.0f} ({method})"
    return ""


def _ci(point: float, low: float, high: float, digits: int = 1) -> str:
    return f"{point:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", text).strip("_") or "default"


def _curve(runs: list[RunLog], reps: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """x values every run evaluated at; mean across runs and its bootstrap 95% CI at each."""
    xs = sorted(set.intersection(*(set(r.x.tolist()) for r in runs)))
    ys = np.array([[r.y[np.nonzero(r.x == x)[0][-1]] for x in xs] for r in runs])  # (runs, xs)
    rng = np.random.default_rng(seed)
    boot = ys[rng.integers(0, len(runs), size=(reps, len(runs)))].mean(axis=1)  # (reps, xs)
    low, high = np.percentile(boot, [2.5, 97.5], axis=0)
    return np.array(xs), ys.mean(axis=0), low, high


def _plot(
    path: Path,
    title: str,
    xlabel: str,
    ylabel: str,
    series: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
    for name, (x, y, low, high) in series.items():
        (line,) = ax.plot(x, y, label=name)
        ax.fill_between(x, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def default_out(items: Sequence[str]) -> Path:
    """Where a report goes without --out: reports/<name of the first sweep file>, else reports/runs."""
    sweeps = [Path(i) for i in items if i.endswith((".yaml", ".yml")) and Path(i).is_file()]
    return Path("reports") / (sweeps[0].stem if sweeps else "runs")


def report(
    items: Sequence[str],
    out: str | Path | None = None,
    frame: int | None = None,
    metric: str = "episode_return",
    compare: Sequence[str] | None = None,
    reps: int = 2000,
    seed: int = 0,
) -> Path:
    """Write the report for `items` (run dirs, globs, sweep files) into `out` (default:
    :func:`default_out`); returns report.md."""
    out = default_out(items) if out is None else out
    runs, sweep_compare = collect(items, metric)
    at = int(frame) if frame is not None else max(r.budget for r in runs)
    xname = runs[0].xname
    finished = [r for r in runs if r.reached >= at]
    unfinished = [r for r in runs if r.reached < at]
    if not finished:
        raise ReportError(
            f"no run has reached {xname} {at} (furthest: {max(r.reached for r in runs)}); "
            f"pass --frame to report an earlier point"
        )
    out = Path(out)
    (out / "videos").mkdir(parents=True, exist_ok=True)

    labels = list(dict.fromkeys(r.label for r in runs))
    tasks = list(dict.fromkeys(r.task for r in runs))
    groups: dict[tuple[str, str], list[RunLog]] = {}
    for r in finished:
        groups.setdefault((r.task, r.label), []).append(r)
    refs = _references()
    norm = metric == "episode_return"

    # per-task table
    per_task_rows, md_task = [], []
    for task in tasks:
        for label in labels:
            group = groups.get((task, label))
            if not group:
                continue
            raw = np.array([r.score_at(at) for r in group])
            sd = float(np.std(raw, ddof=1)) if len(raw) > 1 else math.nan
            point, lo, hi = stats.aggregate([raw], stats.aggregate_iqm, reps=reps, seed=seed)
            ref = _reference(refs, task, group[0].config, at)
            seeds = sorted(r.seed for r in group)
            per_task_rows.append(
                [task, label, len(raw), " ".join(map(str, seeds)), float(raw.mean()), sd, point, lo, hi, ref]
            )
            sd_txt = f"{sd:.1f}" if not math.isnan(sd) else "n/a"
            md_task.append(
                f"| {task} | {label} | {len(raw)} | {raw.mean():.1f} +- {sd_txt} | {_ci(point, lo, hi)} | {ref} |"
            )
    _write_csv(
        out / "per_task.csv",
        ["task", "variant", "runs", "seeds", "mean", "std", "iqm", "iqm_low", "iqm_high", "paper"],
        per_task_rows,
    )

    # aggregate table (normalised scores, stratified bootstrap over tasks)
    def normalised(label: str, only: Sequence[str] | None = None) -> tuple[list[str], list[np.ndarray]]:
        ts = [t for t in tasks if (t, label) in groups and (only is None or t in only)]
        div = {t: (max_return(t) if norm else 1.0) for t in ts}
        return ts, [np.array([r.score_at(at) for r in groups[(t, label)]]) / div[t] for t in ts]

    agg_rows, md_agg = [], []
    for label in labels:
        ts, scores = normalised(label)
        if not ts:
            continue
        cells = [stats.aggregate(scores, fn, reps=reps, seed=seed) for fn in stats.AGGREGATES.values()]
        agg_rows.append([label, len(ts), sum(len(s) for s in scores), *[v for c in cells for v in c]])
        md_agg.append(
            f"| {label} | {len(ts)} | {sum(len(s) for s in scores)} | "
            + " | ".join(_ci(*c, digits=3) for c in cells)
            + " |"
        )
    _write_csv(
        out / "aggregate.csv",
        [
            "variant",
            "tasks",
            "runs",
            *[f"{n.replace(' ', '_')}{s}" for n in stats.AGGREGATES for s in ("", "_low", "_high")],
        ],
        agg_rows,
    )

    # probability of improvement
    pair = tuple(compare or sweep_compare or (labels if len(labels) == 2 else ()))
    md_poi, poi_rows = [], []
    if pair:
        for name in pair:
            if name not in labels:
                raise ReportError(
                    f"--compare names {name!r}, which is not a variant here (variants: {', '.join(labels)})"
                )
        common = [t for t in tasks if (t, pair[0]) in groups and (t, pair[1]) in groups]
        if common:
            _, xs = normalised(pair[0], common)
            _, ys = normalised(pair[1], common)
            p = stats.probability_of_improvement(xs, ys, reps=reps, seed=seed)
            poi_rows.append([pair[0], pair[1], len(common), *p])
            md_poi.append(f"P({pair[0]} > {pair[1]}) over {len(common)} task(s): {_ci(*p, digits=3)}")
        else:
            md_poi.append(f"P({pair[0]} > {pair[1]}): no task has finished runs of both")
    _write_csv(out / "improvement.csv", ["x", "y", "tasks", "probability", "low", "high"], poi_rows)

    # learning curves, per task and aggregate
    figures = []
    for task in tasks:
        series, rows = {}, []
        for label in labels:
            group = groups.get((task, label))
            if not group:
                continue
            x, y, low, high = _curve(group, reps, seed)
            series[f"{label} ({len(group)} seeds)"] = (x, y, low, high)
            rows += [[label, len(group), xi, yi, li, hi] for xi, yi, li, hi in zip(x, y, low, high, strict=True)]
        if not series:
            continue
        _write_csv(out / f"curves_{_slug(task)}.csv", ["variant", "seeds", xname, metric, "low", "high"], rows)
        seeds_txt = ", ".join(f"{lab}: {len(groups[(task, lab)])}" for lab in labels if (task, lab) in groups)
        title = f"{task}, up to {at:,} {xname}s; seeds: {seeds_txt}\nmean and 95% bootstrap CI over seeds"
        _plot(out / f"curves_{_slug(task)}.png", title, f"{xname}s", metric, series)
        figures.append((task, f"curves_{_slug(task)}.png"))
    agg_series = {}
    for label in labels:
        ts, _ = normalised(label)
        if len(ts) < 2:
            continue
        per_task = [_curve(groups[(t, label)], 1, seed) for t in ts]
        xs = sorted(set.intersection(*(set(c[0].tolist()) for c in per_task)))
        if not xs:
            continue
        pts = []
        for x in xs:  # IQM of normalised scores across tasks and seeds at each x, stratified CI
            scores = [
                np.array([r.y[np.nonzero(r.x == x)[0][-1]] for r in groups[(t, label)]])
                / (max_return(t) if norm else 1.0)
                for t in ts
            ]
            pts.append(stats.aggregate(scores, stats.aggregate_iqm, reps=min(reps, 500), seed=seed))
        arr = np.array(pts)
        agg_series[f"{label} ({len(ts)} tasks)"] = (np.array(xs), arr[:, 0], arr[:, 1], arr[:, 2])
    if agg_series:
        runs_txt = ", ".join(
            f"{lab}: {sum(len(groups[(t, lab)]) for t in tasks if (t, lab) in groups)}" for lab in labels
        )
        _plot(
            out / "curves_aggregate.png",
            f"{len(tasks)} tasks, up to {at:,} {xname}s; runs: {runs_txt}\n"
            f"IQM of normalised {metric}, 95% stratified bootstrap CI",
            f"{xname}s",
            "IQM (normalised)",
            agg_series,
        )
        figures.append(("aggregate", "curves_aggregate.png"))

    # videos: each task and variant's last eval video (from the run that got furthest)
    videos = []
    for (task, label), group in groups.items():
        video = max(group, key=lambda r: r.reached).last_video()
        if video is not None:
            target = out / "videos" / f"{_slug(task)}__{_slug(label)}.mp4"
            shutil.copyfile(video, target)
            videos.append(f"- {task} / {label}: [{video.name}](videos/{target.name})")

    # markdown
    frames_txt = f"{at:,} {xname}s"
    md = [
        f"# Report at {frames_txt}",
        "",
        f"{len(finished)} finished runs ({len(tasks)} task(s), {len(labels)} variant(s)), scored by their last "
        f"evaluation at or before {frames_txt} (`{metric}`). Bootstrap: {reps} replicates, seed {seed}.",
        "",
    ]
    md += [
        "## Per task",
        "",
        "Mean +- std (ddof 1) across seeds; IQM with a 95% bootstrap CI over seeds; "
        "the paper's number for the matching method at this frame (SPEC 8, results/reference_scores.csv).",
        "",
        "| task | variant | seeds | mean +- std | IQM [95% CI] | paper |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
        *md_task,
        "",
    ]
    norm_txt = (
        "scores / the task's maximum return (1000; reach_duplo 250; point_reach 50)" if norm else f"raw `{metric}`"
    )
    md += [
        "## Across tasks",
        "",
        f"Normalised {norm_txt}; 95% stratified-bootstrap CIs (runs resampled within "
        "each task). rliable's definitions: IQM and optimality gap (mean of max(0, 1 - score)) over all "
        "runs pooled; mean and median over tasks of each task's mean score.",
        "",
        "| variant | tasks | runs | IQM | mean | median | optimality gap |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        *md_agg,
        "",
    ]
    nine = [r for r in refs if r["task"] == "mean of nine tasks" and int(r["frames"]) == at]
    if nine and set(NINE_TASKS) <= set(tasks):
        md += [
            "Paper, mean raw return over the nine tasks at this frame: "
            + ", ".join(f"{r['method']} {float(r['score']):.0f}" for r in nine),
            "",
        ]
        for label in labels:
            if all((t, label) in groups for t in NINE_TASKS):
                m = np.mean([np.mean([r.score_at(at) for r in groups[(t, label)]]) for t in NINE_TASKS])
                md.append(f"- ours, {label}: {m:.0f}")
        md.append("")
    if any("dataset" in r.config for r in runs):
        md += [
            "Offline reference numbers (SPEC 7, normalised return = return / 10): results/reference_offline.csv.",
            "",
        ]
    if md_poi:
        md += ["## Probability of improvement", "", *md_poi, ""]
    md += [
        "## Learning curves",
        "",
        f"Only runs that reached {frames_txt} are drawn; shading is a 95% bootstrap CI over seeds.",
        "",
    ]
    md += [f"![{task}]({name})" for task, name in figures] + [""]
    if videos:
        md += ["## Videos (last evaluation)", "", *videos, ""]
    md += ["## Unfinished runs (left out of every number above)", ""]
    md += [
        f"- {r.task} / {r.label} / seed {r.seed}: "
        + (f"reached {r.reached:,} of {at:,}" if r.reached >= 0 else "no evaluation yet")
        + f" ({r.run_dir})"
        for r in unfinished
    ] or ["none"]
    (out / "report.md").write_text("\n".join(md) + "\n")
    return out / "report.md"
