"""`taco report`: eval logs of many runs -> tables with bootstrap CIs, learning curves, a markdown summary.

Runs are grouped by task and variant. A variant is the sweep-file label when runs come from a sweep
file; for plain run directories it is `<agent>-<aux>` followed by every setting that differs from that
task/agent/aux's defaults (e.g. `drqv2-taco taco_k=5`). Online runs count environment frames and
offline runs learner updates: each clock gets its own section and no number compares runs across
them. Each run is scored at one point of its clock: its last evaluation at or before it. Runs whose
logs stop before it are listed as unfinished and enter no number and no curve. With a reference
(`--reference drqv2`), the published per-seed curves of that method are drawn behind each task's
online curves and compared with the runs at the frames both have.

Outputs in --out: report.md, per_task.csv, aggregate.csv, improvement.csv, curves_<task>.csv/.png,
curves_aggregate.png (offline runs: curves_offline_<task>..., curves_offline_aggregate.png),
reference_<name>.csv, videos/ (each task and variant's last eval video).
"""

from __future__ import annotations

import csv
import glob
import io
import json
import math
import re
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from taco_rl.envs.tasks import max_return
from taco_rl.runners.core.rundir import DATASET_RECORD
from taco_rl.runners.study import published, stats

CLOCKS = ("frame", "update")  # online runs count environment frames, offline runs learner updates
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
    def clock(self) -> str:
        """ "update" for an offline run (its config has a budget in updates), else "frame"."""
        return "update" if "updates" in self.config else "frame"

    @property
    def reached(self) -> int:
        return int(self.x[-1]) if self.x.size else -1

    def score_at(self, at: int) -> float:
        return float(self.y[np.nonzero(self.x <= at)[0][-1]])

    def last_video(self) -> Path | None:
        videos = sorted((self.run_dir / "videos").glob("*.mp4"))
        return videos[-1] if videos else None

    @property
    def dataset(self) -> dict[str, Any] | None:
        """An offline run's dataset record: the one its run directory keeps, else the dataset.json at
        its config's dataset path; None for an online run or where neither can be read."""
        if "dataset" not in self.config:
            return None
        for path in (self.run_dir / DATASET_RECORD, Path(str(self.config["dataset"])).expanduser() / "dataset.json"):
            try:
                info = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if isinstance(info, dict) and isinstance(info.get("return"), dict) and "mean" in info["return"]:
                return info
        return None


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
    """`<agent>-<aux>` and the settings that differ from that task/agent/aux/preset's defaults (an
    offline run's from the offline defaults, its dataset named by its folder)."""
    from taco_rl.runners.core.config import UNHASHED, resolve

    label = f"{config.get('agent')}-{config.get('aux')}"
    offline = "updates" in config
    try:
        base = resolve(
            [f"{k}={config[k]}" for k in ("task", "agent", "aux", "preset") if config.get(k)], offline=offline
        )
    except Exception:  # not a config of this version of the suite: agent and aux only
        return label, []
    skip = set(UNHASHED) | {"seed", "task", "agent", "aux", "preset"}
    diffs = []
    for k, v in sorted(config.items()):
        if k in skip or not hasattr(base, k) or getattr(base, k) == v:
            continue
        diffs.append(f"dataset={Path(str(v)).name}" if k == "dataset" else f"{k}={v}")
    return label, diffs


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
                cfg = asdict(planned.cfg) if is_dataclass(planned.cfg) and not isinstance(planned.cfg, type) else {}
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
    # settings every config-labelled run of a clock shares say nothing about which is which: drop them
    for clock in CLOCKS:
        labelled = [r for r in runs if id(r) in derived and r.clock == clock]
        common = set.intersection(*(set(derived[id(r)][1]) for r in labelled)) if labelled else set()
        for run in labelled:
            prefix, diffs = derived[id(run)]
            run.label = " ".join([prefix, *(d for d in diffs if d not in common)])
    return runs, compare


# ---------------------------------------------------------------------------- numbers
def _reference(task: str, config: dict[str, Any], at: int) -> str:
    """The paper's number for this task and the config's method, as a raw return."""
    agent, aux = config.get("agent"), config.get("aux")
    if "dataset" in config:  # offline: V-D4RL's table, matched by the dataset folder's name
        method, kind = OFFLINE_REFERENCE_METHOD.get(str(agent)), Path(str(config["dataset"])).name
        for r in published.table("offline_scores.csv") if aux == "none" else []:
            if r["task"] == task and r["method"] == method and r["dataset"] == kind:
                return f"{10 * float(r['score']):.0f} ({method}, V-D4RL {kind}: {r['score']} x 10)"
        return ""
    method = REFERENCE_METHOD.get((str(agent), str(aux)))
    for r in published.table("scores.csv"):
        if r["task"] == task and r["method"] == method and int(r["frames"]) == at:
            return f"{float(r['score']):.0f} ({method})"
    return ""


def _data_return(group: list[RunLog]) -> float | None:
    """The mean episode return of the data a group of offline runs trained on (their datasets' mean,
    weighted by episodes where they differ); None where a run's dataset record cannot be read."""
    infos = [r.dataset for r in group]
    if any(i is None for i in infos):
        return None
    unique = {str(i["checksum"]) if "checksum" in i else str(i.get("path")): i for i in infos if i is not None}
    episodes = [max(int(i.get("episodes", 1)), 1) for i in unique.values()]
    return float(np.average([float(i["return"]["mean"]) for i in unique.values()], weights=episodes))


def _data_text(value: float) -> str:
    """A dataset's mean return and its normalised score (return / 10, SPEC 7)."""
    return f"{value:.1f} (score {value / 10:.1f})"


def _ci(ci: tuple[float, float, float], digits: int = 1) -> str:
    point, low, high = ci
    return f"{point:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", text).strip("_") or "default"


def _curve(runs: list[RunLog], reps: int, seed: int, at: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """x values up to `at` that every run evaluated at; mean across runs and its bootstrap 95% CI at each."""
    xs = sorted(x for x in set.intersection(*(set(r.x.tolist()) for r in runs)) if x <= at)
    ys = np.array([[r.y[np.nonzero(r.x == x)[0][-1]] for x in xs] for r in runs])  # (runs, xs)
    rng = np.random.default_rng(seed)
    boot = ys[rng.integers(0, len(runs), size=(reps, len(runs)))].mean(axis=1)  # (reps, xs)
    low, high = np.percentile(boot, [2.5, 97.5], axis=0)
    return np.array(xs), ys.mean(axis=0), low, high


Series = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # x, y, band low, band high


def _plot(
    path: Path,
    title: str,
    xlabel: str,
    ylabel: str,
    series: dict[str, Series],
    behind: dict[str, Series] | None = None,
) -> None:
    """One panel: each series as a line over its shaded band; `behind` (published curves) in grey
    under them, dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    outside = len(series) + len(behind or {}) > 4  # a long legend goes right of the panel, not over the lines
    fig, ax = plt.subplots(figsize=(11 if outside else 7, 4.5), dpi=100)
    for name, (x, y, low, high) in (behind or {}).items():
        ax.fill_between(x, low, high, color="0.6", alpha=0.3, linewidth=0, zorder=1)
        ax.plot(x, y, color="0.35", linestyle="--", marker=".", label=name, zorder=2)
    # past the default cycle's 10 colours, 20 distinct ones, so that no two series share a colour
    tab20 = plt.get_cmap("tab20")
    for i, (name, (x, y, low, high)) in enumerate(series.items()):
        colour = tab20(i % 20) if len(series) > 10 else None
        (line,) = ax.plot(x, y, label=name, color=colour, zorder=4)
        ax.fill_between(x, low, high, color=line.get_color(), alpha=0.2, linewidth=0, zorder=3)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if outside:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    else:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def default_out(items: Sequence[str]) -> Path:
    """Where a report goes without --out: reports/<name of the first sweep file>, else reports/runs."""
    sweeps = [Path(i) for i in items if i.endswith((".yaml", ".yml")) and Path(i).is_file()]
    return Path("reports") / (sweeps[0].stem if sweeps else "runs")


# ---------------------------------------------------------------------------- one clock's section
@dataclass
class _Section:
    """The runs of one clock (online: frames, offline: updates), scored at `at` on that clock."""

    clock: str
    at: int
    runs: list[RunLog]
    finished: list[RunLog] = field(init=False)
    unfinished: list[RunLog] = field(init=False)
    labels: list[str] = field(init=False)
    tasks: list[str] = field(init=False)
    groups: dict[tuple[str, str], list[RunLog]] = field(init=False)

    def __post_init__(self) -> None:
        self.finished = [r for r in self.runs if r.reached >= self.at]
        self.unfinished = [r for r in self.runs if r.reached < self.at]
        self.labels = list(dict.fromkeys(r.label for r in self.runs))
        self.tasks = list(dict.fromkeys(r.task for r in self.runs))
        self.groups = {}
        for r in self.finished:
            self.groups.setdefault((r.task, r.label), []).append(r)

    @property
    def kind(self) -> str:
        return "online" if self.clock == "frame" else "offline"

    @property
    def at_text(self) -> str:
        return f"{self.at:,} {self.clock}s"

    @property
    def prefix(self) -> str:
        """File-name prefix of this section's curves and videos."""
        return "" if self.clock == "frame" else "offline_"

    def missing(self) -> str:
        furthest = max(r.reached for r in self.runs)
        return f"no run has reached {self.clock} {self.at} (furthest: {furthest})"


class _Tables:
    """The CSV rows of every section, written once at the end."""

    def __init__(self) -> None:
        self.per_task: list[list[Any]] = []
        self.aggregate: list[list[Any]] = []
        self.improvement: list[list[Any]] = []
        self.reference: list[list[Any]] = []


def _pair(sec: _Section, pair: tuple[str, ...], others: list[_Section], explicit: bool) -> tuple[str, str] | None | str:
    """The variants to compare within `sec`, or a line saying why runs of two clocks are not compared."""
    if not pair:
        return (sec.labels[0], sec.labels[1]) if len(sec.labels) == 2 else None
    here = [name in sec.labels for name in pair]
    if all(here):
        return pair[0], pair[1]
    if not here[0]:
        return None  # said in the section that holds the first one, if any
    other = next((s for s in others if pair[1] in s.labels), None)
    if other is None:
        return None
    return (
        f"P({pair[0]} > {pair[1]}): not computed: {pair[0]} is scored on {sec.clock}s ({sec.kind}) and "
        f"{pair[1]} on {other.clock}s ({other.kind}); runs on different clocks are not compared"
    )


def _section(
    sec: _Section,
    out: Path,
    h: str,
    tables: _Tables,
    metric: str,
    pair: tuple[str, str] | None | str,
    reference: str | None,
    reps: int,
    seed: int,
) -> list[str]:
    """The markdown of one clock's section (headings at level `h`); its CSV rows go to `tables`."""
    at, groups, labels, tasks, xname = sec.at, sec.groups, sec.labels, sec.tasks, sec.clock
    norm = metric == "episode_return"
    if not sec.finished:
        return [
            f"{sec.missing()}: nothing of these runs is scored (pass --{'frame' if sec.clock == 'frame' else 'update'} "
            "to report an earlier point)",
            "",
            *_unfinished(sec, h),
        ]

    # per-task table
    md_task = []
    for task in tasks:
        for label in labels:
            group = groups.get((task, label))
            if not group:
                continue
            scores = np.array([r.score_at(at) for r in group])
            sd = float(np.std(scores, ddof=1)) if len(scores) > 1 else math.nan
            point, low, high = stats.aggregate([scores], stats.aggregate_iqm, reps=reps, seed=seed)
            ref = _reference(task, group[0].config, at)
            seeds = sorted(r.seed for r in group)
            data = _data_return(group) if sec.clock == "update" else None
            tables.per_task.append(
                [task, label, len(scores), " ".join(map(str, seeds)), float(scores.mean()), sd, point, low, high, ref]
                + ["" if data is None else data]
                + [xname, at]
            )
            sd_txt = f"{sd:.1f}" if not math.isnan(sd) else "n/a"
            data_cell = "" if sec.clock == "frame" else ("n/a" if data is None else _data_text(data))
            md_task.append(
                f"| {task} | {label} | {len(scores)} | {scores.mean():.1f} +- {sd_txt} | "
                f"{_ci((point, low, high))} | {data_cell + ' | ' if sec.clock == 'update' else ''}{ref} |"
            )

    # aggregate table (normalised scores, stratified bootstrap over tasks)
    def normalised(label: str, only: Sequence[str] | None = None) -> tuple[list[str], list[np.ndarray]]:
        ts = [t for t in tasks if (t, label) in groups and (only is None or t in only)]
        div = {t: (max_return(t) if norm else 1.0) for t in ts}
        return ts, [np.array([r.score_at(at) for r in groups[(t, label)]]) / div[t] for t in ts]

    md_agg = []
    for label in labels:
        ts, normed = normalised(label)
        if not ts:
            continue
        cells = [stats.aggregate(normed, fn, reps=reps, seed=seed) for fn in stats.AGGREGATES.values()]
        tables.aggregate.append(
            [label, len(ts), sum(len(s) for s in normed), *[v for c in cells for v in c], xname, at]
        )
        md_agg.append(
            f"| {label} | {len(ts)} | {sum(len(s) for s in normed)} | "
            + " | ".join(_ci(c, digits=3) for c in cells)
            + " |"
        )

    # probability of improvement, within this clock only
    md_poi = []
    if isinstance(pair, str):
        md_poi.append(pair)
    elif pair:
        common = [t for t in tasks if (t, pair[0]) in groups and (t, pair[1]) in groups]
        if common:
            _, xs = normalised(pair[0], common)
            _, ys = normalised(pair[1], common)
            p = stats.probability_of_improvement(xs, ys, reps=reps, seed=seed)
            tables.improvement.append([pair[0], pair[1], len(common), *p, xname, at])
            md_poi.append(f"P({pair[0]} > {pair[1]}) over {len(common)} task(s): {_ci(p, digits=3)}")
        else:
            md_poi.append(f"P({pair[0]} > {pair[1]}): no task has finished runs of both")

    # learning curves, per task and aggregate; the published curves behind the online ones
    figures, curves = [], {}
    notes: list[str] = []
    for task in tasks:
        series, rows = {}, []
        for label in labels:
            group = groups.get((task, label))
            if not group:
                continue
            cx, cy, clow, chigh = curves[(task, label)] = _curve(group, reps, seed, at)
            series[f"{label} ({_count(len(group), 'seed')})"] = (cx, cy, clow, chigh)
            rows += [[label, len(group), *point] for point in zip(cx, cy, clow, chigh, strict=True)]
        if not series:
            continue
        name = f"curves_{sec.prefix}{_slug(task)}"
        _write_csv(out / f"{name}.csv", ["variant", "seeds", xname, metric, "low", "high"], rows)
        counts = [len(groups[(task, lab)]) for lab in labels if (task, lab) in groups]
        seeds_txt = f"{_count(counts[0], 'seed')} each" if len(set(counts)) == 1 else "seeds as in the legend"
        title = f"{task}, up to {at:,} {xname}s, {seeds_txt}\nmean and 95% bootstrap CI over seeds"
        behind = {}
        if reference and sec.clock == "frame":
            pub = _published_curve(reference, task)
            if pub is None:
                notes.append(f"no published {published.check_name(reference)[0]} curve for {task}")
            else:
                behind[f"{pub.method} published ({pub.seeds} seeds): mean, min-max"] = pub.band(at)
                notes += _compare_published(pub, task, labels, groups, curves, tables)
        _plot(out / f"{name}.png", title, f"{xname}s", metric, series, behind)
        figures.append((task, f"{name}.png"))
    agg_series = {}
    for label in labels:
        ts, _ = normalised(label)
        if len(ts) < 2:
            continue
        xs = sorted(set.intersection(*(set(curves[(t, label)][0].tolist()) for t in ts)))
        if not xs:
            continue
        pts = []
        for x in xs:  # IQM of normalised scores across tasks and seeds at each x, stratified CI
            at_x = [
                np.array([r.y[np.nonzero(r.x == x)[0][-1]] for r in groups[(t, label)]])
                / (max_return(t) if norm else 1.0)
                for t in ts
            ]
            pts.append(stats.aggregate(at_x, stats.aggregate_iqm, reps=min(reps, 500), seed=seed))
        arr = np.array(pts)
        agg_series[f"{label} ({len(ts)} tasks)"] = (np.array(xs), arr[:, 0], arr[:, 1], arr[:, 2])
    if agg_series:
        runs = sum(len(g) for g in groups.values())
        _plot(
            out / f"curves_{sec.prefix}aggregate.png",
            f"{len(tasks)} tasks, up to {at:,} {xname}s, {_count(runs, 'run')}\n"
            f"IQM of normalised {metric}, 95% stratified bootstrap CI",
            f"{xname}s",
            "IQM (normalised)",
            agg_series,
        )
        figures.append(("aggregate", f"curves_{sec.prefix}aggregate.png"))

    # videos: each task and variant's last eval video (from the run that got furthest)
    videos = []
    for (task, label), group in groups.items():
        video = max(group, key=lambda r: r.reached).last_video()
        if video is not None:
            target = out / "videos" / f"{sec.prefix}{_slug(task)}__{_slug(label)}.mp4"
            shutil.copyfile(video, target)
            videos.append(f"- {task} / {label}: [{video.name}](videos/{target.name})")

    # markdown
    md = [
        f"{len(sec.finished)} finished runs ({len(tasks)} task(s), {len(labels)} variant(s)), scored by their "
        f"last evaluation at or before {sec.at_text} (`{metric}`). Bootstrap: {reps} replicates, seed {seed}.",
        "",
        f"{h} Per task",
        "",
        "Mean +- std (ddof 1) across seeds; IQM with a 95% bootstrap CI over seeds; the paper's number for "
        "the matching method at this point (SPEC 7 and 8, runners/study/reference/, linked as results/reference).",
        "",
        *(
            [
                "The dataset column is the mean return of the episodes the runs trained on (their datasets' "
                "own record; score = return / 10), the level an offline learner is measured against.",
                "",
                "| task | variant | seeds | mean +- std | IQM [95% CI] | dataset | paper |",
                "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
            ]
            if sec.clock == "update"
            else [
                "| task | variant | seeds | mean +- std | IQM [95% CI] | paper |",
                "| --- | --- | ---: | ---: | ---: | ---: |",
            ]
        ),
        *md_task,
        "",
    ]
    norm_txt = (
        "scores / the task's maximum return (1000; manipulation tasks 250; point_reach 50)"
        if norm
        else f"raw `{metric}`"
    )
    md += [
        f"{h} Across tasks",
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
    nine = [r for r in published.table("scores.csv") if r["task"] == "mean of nine tasks" and int(r["frames"]) == at]
    if sec.clock == "frame" and nine and set(NINE_TASKS) <= set(tasks):
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
    if sec.clock == "update":
        md += [
            "Offline reference numbers (SPEC 7, normalised return = return / 10): "
            "runners/study/reference/offline_scores.csv.",
            "",
        ]
    if md_poi:
        md += [f"{h} Probability of improvement", "", *md_poi, ""]
    md += [
        f"{h} Learning curves",
        "",
        f"Only runs that reached {sec.at_text} are drawn; shading is a 95% bootstrap CI over seeds.",
        "",
    ]
    md += [f"![{task}]({name})" for task, name in figures] + [""]
    if reference and sec.clock == "frame":
        md += _published_md(reference, h, tables.reference, notes)
    elif reference:
        md += [f"--reference {reference}: {_offline_note(reference)}.", ""]
    if videos:
        md += [f"{h} Videos (last evaluation)", "", *videos, ""]
    return md + _unfinished(sec, h)


def _unfinished(sec: _Section, h: str) -> list[str]:
    lines = [
        f"- {r.task} / {r.label} / seed {r.seed}: "
        + (f"reached {r.reached:,} of {sec.at:,}" if r.reached >= 0 else "no evaluation yet")
        + f" ({r.run_dir})"
        for r in sec.unfinished
    ]
    return [f"{h} Unfinished runs (left out of every number above)", "", *(lines or ["none"]), ""]


# ---------------------------------------------------------------------------- published curves
_PUBLISHED_CACHE: dict[tuple[str, str], published.Curve | None] = {}
MD_FRAMES = 10  # report.md shows at most this many compared frames per task and variant


def _published_curve(reference: str, task: str) -> published.Curve | None:
    key = (reference, task)
    if key not in _PUBLISHED_CACHE:
        _PUBLISHED_CACHE[key] = published.curve(reference, task)
    return _PUBLISHED_CACHE[key]


def _offline_note(reference: str) -> str:
    method = published.check_name(reference)[0]
    return f"{method}'s published curves count environment frames; offline runs (updates) are not set beside them"


def _frames_text(frames: Sequence[float], limit: int = 8) -> str:
    shown = ", ".join(f"{int(f):,}" for f in frames[:limit])
    return shown + (f" and {len(frames) - limit} more" if len(frames) > limit else "")


def _compare_published(
    pub: published.Curve,
    task: str,
    labels: list[str],
    groups: dict[tuple[str, str], list[RunLog]],
    curves: dict[tuple[str, str], Series],
    tables: _Tables,
) -> list[str]:
    """Rows "runs vs published" at the frames both have (into tables.reference); notes on frames that
    do not line up."""
    notes = []
    for label in labels:
        if (task, label) not in groups:
            continue
        group = groups[(task, label)]
        xs = curves[(task, label)][0].tolist()  # the curve stops at the report's scoring point
        shared = [x for x in xs if pub.at(x) is not None]
        off = [x for x in xs if pub.at(x) is None]
        if not shared:
            notes.append(
                f"{task} / {label}: the runs' evaluation frames ({_frames_text(xs)}) do not line up with "
                f"{pub.method}'s published frames ({pub.spacing()}): nothing compared"
            )
            continue
        if off:
            notes.append(
                f"{task} / {label}: {len(off)} of the runs' {len(xs)} evaluation frames are not published "
                f"frames ({pub.spacing()}) and are left out of the comparison: {_frames_text(off)}"
            )
        for x in shared:
            ours = np.array([r.y[np.nonzero(r.x == x)[0][-1]] for r in group])
            theirs = pub.at(x)
            assert theirs is not None
            mean = float(ours.mean())
            where = [published.position(float(v), theirs) for v in ours]
            tables.reference.append(
                [task, label, int(x), len(ours), mean, float(ours.min()), float(ours.max())]
                + [theirs.size, float(theirs.mean()), float(theirs.min()), float(theirs.max())]
                + [published.position(mean, theirs), published.percentile(mean, theirs)]
                + [where.count("below"), where.count("within"), where.count("above")]
            )
    return notes


REFERENCE_HEADER = [
    "task",
    "variant",
    "frame",
    "runs",
    "runs_mean",
    "runs_min",
    "runs_max",
    "published_seeds",
    "published_mean",
    "published_min",
    "published_max",
    "where",
    "percentile",
    "runs_below",
    "runs_within",
    "runs_above",
]


def _thin(rows: list[list[Any]], limit: int) -> list[list[Any]]:
    """At most `limit` rows, evenly spread, the last kept."""
    if len(rows) <= limit:
        return rows
    keep = sorted({round(i * (len(rows) - 1) / (limit - 1)) for i in range(limit)})
    return [rows[i] for i in keep]


def _published_md(reference: str, h: str, rows: list[list[Any]], notes: list[str]) -> list[str]:
    method = published.check_name(reference)[0]
    md = [
        f"{h} Runs vs published {method} at the same frames",
        "",
        f"{method}'s published per-seed evaluation curves (runners/study/reference/README.md names the source), "
        "drawn in grey behind each task's curves: mean and min-max over the published seeds. Compared at the "
        "frames where both the runs and the published curves have an evaluation; every variant is set beside "
        f"the same {method} curve. 'where' places the runs' mean against the published seeds' range, "
        "'percentile' is the share of published seeds below the runs' mean (ties count half). "
        f"reference_{reference}.csv has every compared frame and how many runs fall below, within and above "
        f"the range; here at most {MD_FRAMES} frames per task and variant (evenly spread, the last kept).",
        "",
    ]
    if rows:
        md += [
            "| task | variant | frame | runs | runs: mean [min, max] | published: mean [min, max] | seeds | where "
            "| percentile |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- | ---: |",
        ]
        by_group: dict[tuple[str, str], list[list[Any]]] = {}
        for row in rows:
            by_group.setdefault((row[0], row[1]), []).append(row)
        for group_rows in by_group.values():
            for t, v, x, n, m, lo, hi, pn, pm, plo, phi, where, pct, *_ in _thin(group_rows, MD_FRAMES):
                md.append(
                    f"| {t} | {v} | {x:,} | {n} | {m:.1f} [{lo:.1f}, {hi:.1f}] | {pm:.1f} [{plo:.1f}, {phi:.1f}] "
                    f"| {pn} | {where} | {pct:.0f} |"
                )
        md.append("")
    return md + [f"- {note}" for note in notes] + ([""] if notes else [])


# ---------------------------------------------------------------------------- the report
def report(
    items: Sequence[str],
    out: str | Path | None = None,
    frame: int | None = None,
    metric: str = "episode_return",
    compare: Sequence[str] | None = None,
    reps: int = 2000,
    seed: int = 0,
    update: int | None = None,
    reference: str | None = None,
) -> Path:
    """Write the report for `items` (run dirs, globs, sweep files) into `out` (default:
    :func:`default_out`); returns report.md.

    Online runs (frames) and offline runs (learner updates) are reported in separate sections and
    never compared: online runs are scored at `frame`, offline runs at `update` (a report of offline
    runs only also takes `frame` as the update); each defaults to its runs' largest budget.
    `reference` (a name in published.CURVES) draws that method's published curves behind the online
    runs' and compares them at the frames both have."""
    if reference is not None:
        try:
            published.check_name(reference)
        except published.PublishedDataError as e:
            raise ReportError(str(e)) from None
    out = default_out(items) if out is None else out
    runs, sweep_compare = collect(items, metric)
    by_clock = {c: [r for r in runs if r.clock == c] for c in CLOCKS}
    by_clock = {c: rs for c, rs in by_clock.items() if rs}
    if update is not None and "update" not in by_clock:
        raise ReportError(f"--update {update}: no offline run here (--update scores offline runs; use --frame)")
    given = {"frame": frame, "update": update if update is not None or "frame" in by_clock else frame}
    sections = []
    for c, rs in by_clock.items():
        point = given[c]
        sections.append(_Section(c, int(point) if point is not None else max(r.budget for r in rs), rs))
    if not any(s.finished for s in sections):
        flag = " or ".join(f"--{s.clock}" for s in sections)
        raise ReportError("; ".join(s.missing() for s in sections) + f"; pass {flag} to report an earlier point")
    labels = list(dict.fromkeys(r.label for r in runs))
    pair = tuple(compare or sweep_compare)
    for name in pair:
        if name not in labels:
            raise ReportError(f"--compare names {name!r}, which is not a variant here (variants: {', '.join(labels)})")
    if compare and not any(set(pair) <= set(s.labels) for s in sections):
        a, b = (next(s for s in sections if name in s.labels) for name in pair)
        raise ReportError(
            f"--compare {pair[0]} {pair[1]}: {pair[0]} is scored on {a.clock}s ({a.kind}) and {pair[1]} on "
            f"{b.clock}s ({b.kind}); runs on different clocks are not compared"
        )
    out = Path(out)
    (out / "videos").mkdir(parents=True, exist_ok=True)

    tables = _Tables()
    try:
        if len(sections) == 1:
            (sec,) = sections
            pair_here = _pair(sec, pair, [], bool(compare))
            md = [f"# Report at {sec.at_text}", ""]
            md += _section(sec, out, "##", tables, metric, pair_here, reference, reps, seed)
        else:
            md = [
                "# Report: " + ", ".join(f"{s.kind} runs at {s.at_text}" for s in sections),
                "",
                "Online runs count environment frames, offline runs learner updates: each clock has its own "
                "section, and no number compares runs across them.",
                "",
            ]
            for sec in sections:
                pair_here = _pair(sec, pair, [s for s in sections if s is not sec], bool(compare))
                md += [f"## {sec.kind.capitalize()} runs, at {sec.at_text}", ""]
                md += _section(sec, out, "###", tables, metric, pair_here, reference, reps, seed)
    except published.PublishedDataError as e:
        raise ReportError(str(e)) from None

    clock_cols = ["clock", "at"]
    _write_csv(
        out / "per_task.csv",
        [
            "task",
            "variant",
            "runs",
            "seeds",
            "mean",
            "std",
            "iqm",
            "iqm_low",
            "iqm_high",
            "paper",
            "dataset_return",
            *clock_cols,
        ],
        tables.per_task,
    )
    _write_csv(
        out / "aggregate.csv",
        [
            "variant",
            "tasks",
            "runs",
            *[f"{n.replace(' ', '_')}{s}" for n in stats.AGGREGATES for s in ("", "_low", "_high")],
            *clock_cols,
        ],
        tables.aggregate,
    )
    _write_csv(
        out / "improvement.csv", ["x", "y", "tasks", "probability", "low", "high", *clock_cols], tables.improvement
    )
    if reference:
        _write_csv(out / f"reference_{reference}.csv", REFERENCE_HEADER, tables.reference)
    (out / "report.md").write_text("\n".join(md) + "\n")
    return out / "report.md"
