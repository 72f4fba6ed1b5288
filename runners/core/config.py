"""Run configuration: one dataclass is the single source of truth (its help strings are the CLI help).

Resolution order, later wins: dataclass defaults -> task preset -> aux preset -> named preset
(`preset=quick`) -> the user's `key=value` overrides. OmegaConf parses and merges the overrides and
type-checks them against the dataclass.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from taco_rl.envs.tasks import ALIASES, TASK_TABLE
from taco_rl.learner_choices import AUX_KINDS, MIN_IMAGE_SIZE, OFFLINE_AGENT_NAMES, ONLINE_AGENT_NAMES


def _f(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass
class Config:
    # what to run
    task: str = _f(
        "cheetah_run",
        "environment: a dm_control task (e.g. cheetah_run, reach_duplo) or point_reach; `taco tasks` lists them",
    )
    agent: str = _f("drqv2", "learner: drqv2 | sac")
    aux: str = _f("none", "auxiliary loss: none | curl | taco")
    preset: str = _f(
        "",
        "named preset applied after the task/aux presets: quick | paper (empty = paper) | drqv2 "
        "(DrQ-v2's frames by difficulty: easy 1.1M, medium 3.1M, hard 30.1M)",
    )
    seed: int = _f(1, "random seed (training env, networks, replay sampling; eval env uses seed + 10000)")
    device: str = _f("auto", "cpu | cuda | cuda:N | auto (cuda when available)")
    precision: str = _f("fp32", "fp32 | bf16 (autocast for the encoder and heads; changes numerics)")
    root: str = _f("runs", "parent folder of derived run directories")
    run_dir: str = _f("", "explicit run directory (default: <root>/<task>/<agent>-<aux>/seed<seed>-<hash>)")
    resume_from: str = _f(
        "",
        "start from another run directory's last checkpoint (learner, replay, counters) with "
        "this command's settings, e.g. a lower lr after a non-finite stop",
    )
    # environment
    action_repeat: int = _f(2, "simulator frames per agent step")
    frame_stack: int = _f(3, "frames stacked into one observation")
    image_size: int = _f(84, "rendered frame height and width")
    fast_render: bool = _f(False, "turn MuJoCo shadows and multisampling off (faster, slightly different pixels)")
    # budget and evaluation (in frames; steps = frames / action_repeat)
    frames: int = _f(1_000_000, "training budget in simulator frames")
    seed_frames: int = _f(4000, "frames collected before the first update")
    expl_steps: int = _f(2000, "agent steps of uniform random actions at the start")
    eval_every_frames: int = _f(10_000, "evaluate every this many frames")
    eval_episodes: int = _f(10, "episodes per evaluation (mean action, separate env)")
    eval_workers: str = _f(
        "auto",
        "processes that step the evaluation episodes, the policy acting in this process (on the "
        "CPU on each observation as it comes, on a GPU on all in one batch): N | auto (one per "
        "episode up to the cores) | 0 (in this process)",
    )
    save_video: bool = _f(True, "write an mp4 of the first episode of each evaluation")
    video_size: int = _f(
        256, "eval video height and width, rendered by the eval env's camera (observations keep image_size)"
    )
    checkpoint_every_frames: int = _f(
        50_000, "checkpoint (with replay) at the first episode end after this many frames"
    )
    log_every_frames: int = _f(1000, "write train.csv / TensorBoard scalars every this many frames")
    logger: str = _f("tensorboard", "scalars beside eval.csv/train.csv: tensorboard | wandb | tensorboard,wandb | none")
    wandb_project: str = _f("taco-rl", "logger=wandb: the W&B project")
    wandb_entity: str = _f("", "logger=wandb: the W&B entity, a team or user (empty: your default)")
    wandb_group: str = _f("", "logger=wandb: the W&B group (a sweep sets its own name)")
    # replay
    capacity: int = _f(1_000_000, "replay capacity in transitions (one stored frame each)")
    replay_device: str = _f("auto", "where the replay lives: auto (the learner's device) | cpu")
    batch_size: int = _f(256, "replay batch size")
    nstep: int = _f(3, "n-step return length")
    gamma: float = _f(0.99, "discount factor")
    # learner
    lr: float = _f(1e-4, "Adam learning rate (every network)")
    feature_dim: int = _f(50, "trunk output size")
    hidden_dim: int = _f(1024, "MLP width")
    critic_tau: float = _f(0.01, "critic target EMA rate")
    update_every_steps: int = _f(2, "agent steps per learner update")
    num_envs: int = _f(
        1,
        "training envs: 1 in-process (env_overlap applies); N > 1 in N worker processes stepping "
        "episodes in lockstep rounds, each episode entering the replay whole when it ends; frames, "
        "seed_frames and the exploration schedule count frames over all envs, updates per env frame "
        "are unchanged",
    )
    env_overlap: str = _f(
        "auto", "env stepping during updates: thread (a worker thread, same numbers) | serial | auto (thread on cuda)"
    )
    cpu_malloc: str = _f("keep", "keep: freed CPU memory stays in the process (faster CPU updates) | system")
    std_schedule: str = _f("linear(1.0,0.1,500000)", "DrQ-v2 exploration std: number or linear(init,final,steps)")
    std_clip: float = _f(0.3, "DrQ-v2 target/actor noise clip")
    init_alpha: float = _f(0.1, "SAC initial temperature")
    # TACO / CURL
    taco_k: int = _f(3, "TACO horizon K (action sequence length)")
    taco_weight: float = _f(1.0, "weight of the TACO InfoNCE term")
    curl_weight: float = _f(1.0, "weight of the CURL term (0 turns it off)")
    reward_weight: float = _f(1.0, "weight of the reward-prediction term (0 turns it off)")
    latent_action_dim: int = _f(0, "latent action size d_u (0 = int(1.25|A|)+1)")
    action_encoder: bool = _f(True, "learn the action encoder (false: raw actions everywhere)")
    latent_critic: bool = _f(True, "critic scores Q(z, tok(a)) (false: Q(z, a))")
    optimizer: str = _f(
        "reference", "reference (separate critic and aux Adam steps) | single (one summed step, ablation)"
    )


@dataclass
class OfflineConfig(Config):
    """`taco offline`: the same networks, TACO knobs, env and run settings; a fixed dataset instead
    of env interaction, and a budget counted in learner updates."""

    task: str = _f("cheetah_run", "the task evaluated on; default: the dataset's (its dataset.json records it)")
    agent: str = _f("td3bc", "offline learner: bc | td3bc | cql | iql")
    dataset: str = _f("", "dataset directory (a taco-rl dataset: dataset.json + memory-mapped arrays)")
    updates: int = _f(550_000, "training budget in learner updates (V-D4RL: 1.1M loop steps, one update per two)")
    eval_every_updates: int = _f(
        5_000, "evaluate in the live env every this many updates (V-D4RL: every 10k loop steps)"
    )
    checkpoint_every_updates: int = _f(
        50_000, "checkpoint (learner, optimizers, RNG, counters) every this many updates"
    )
    log_every_updates: int = _f(1000, "write train.csv / TensorBoard scalars every this many updates")
    replay_device: str = _f("auto", "where the dataset lives: auto (the learner's GPU when it fits) | cpu (memory map)")
    lr: float = _f(3e-4, "Adam learning rate (every network)")
    std_schedule: str = _f(
        "linear(1.0,0.1,125000)",
        "TD3+BC/CQL policy noise std by update: number or "
        "linear(init,final,updates); V-D4RL's linear(1.0,0.1,250000) over loop steps",
    )
    bc_alpha: float = _f(2.5, "TD3+BC: lambda = bc_alpha / mean|Q|")
    cql_alpha: float = _f(10.0, "CQL: weight of the conservative penalty")
    cql_temp: float = _f(1.0, "CQL: logsumexp temperature")
    cql_samples: int = _f(10, "CQL: random, current-policy and next-policy actions each (per state)")
    iql_expectile: float = _f(0.7, "IQL: expectile tau of the value regression")
    iql_beta: float = _f(3.0, "IQL: inverse temperature of the advantage weights")
    iql_max_weight: float = _f(100.0, "IQL: advantage weights clipped at this value")


# Online settings that an offline run does not read: refused as overrides, left out of its help.
ONLINE_ONLY = (
    "frames",
    "seed_frames",
    "expl_steps",
    "eval_every_frames",
    "checkpoint_every_frames",
    "log_every_frames",
    "capacity",
    "update_every_steps",
    "init_alpha",
    "env_overlap",
    "num_envs",
)
# The settings that shape a task's frames: what `taco data collect policy=random` takes (a run's checkpoint fixes them).
ENV_KEYS = ("action_repeat", "image_size", "frame_stack", "fast_render")

# The references' task configs (SPEC 1; envs.tasks records each task's difficulty): exploration std
# over 100k / 500k / 2M agent steps for easy / medium / hard tasks, medium (the default) for a task no
# reference configures; DrQ-v2's frame budgets by difficulty are `preset=drqv2` (the default frames is
# TACO's 1M). Per-task overrides: humanoid lr 8e-5 and feature_dim 100 (DrQ-v2), walker n-step 1 and
# batch 512, quadruped_run replay capacity 100k (both references).
STD_SCHEDULES = {
    "easy": "linear(1.0,0.1,100000)",
    "medium": "linear(1.0,0.1,500000)",
    "hard": "linear(1.0,0.1,2000000)",
}
DRQV2_FRAMES = {"easy": 1_100_000, "medium": 3_100_000, "hard": 30_100_000}
EASY_TASKS = tuple(name for name, spec in TASK_TABLE.items() if spec.difficulty == "easy")
TASK_PRESETS: dict[str, dict[str, Any]] = {
    **{
        name: {"std_schedule": STD_SCHEDULES[spec.difficulty]}
        for name, spec in TASK_TABLE.items()
        if spec.difficulty in ("easy", "hard")
    },
    **{
        t: {"std_schedule": STD_SCHEDULES["hard"], "lr": 8e-5, "feature_dim": 100}
        for t in ("humanoid_stand", "humanoid_walk", "humanoid_run")
    },
    **{
        t: {"std_schedule": STD_SCHEDULES[TASK_TABLE[t].difficulty or "medium"], "nstep": 1, "batch_size": 512}
        for t in ("walker_stand", "walker_walk", "walker_run")
    },
    "quadruped_run": {"capacity": 100_000},
    # the tiny numpy env: 50-step episodes, small frames, learns in CPU minutes
    "point_reach": {
        "action_repeat": 1,
        "image_size": 32,
        "frames": 6000,
        "seed_frames": 500,
        "expl_steps": 250,
        "eval_every_frames": 1000,
        "eval_episodes": 5,
        "batch_size": 64,
        "nstep": 3,
        "hidden_dim": 256,
        "capacity": 100_000,
        "std_schedule": "linear(1.0,0.1,3000)",
        "checkpoint_every_frames": 2000,
        "log_every_frames": 500,
        "update_every_steps": 1,
    },
}
AUX_PRESETS: dict[str, dict[str, Any]] = {
    "taco": {"batch_size": 1024, "taco_k": 3, "lr": 1e-4},  # the published TACO setting, every task
}
NAMED_PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},
    "drqv2": {},  # frames by the task's difficulty: NAMED_DIFFICULTY_PRESETS
    # a CPU smoke run: every artefact (eval.csv, TensorBoard, video, checkpoint) in a few minutes
    "quick": {
        "frames": 4000,
        "seed_frames": 1000,
        "expl_steps": 500,
        "eval_every_frames": 2000,
        "eval_episodes": 1,
        "batch_size": 32,
        "fast_render": True,
        "checkpoint_every_frames": 2000,
        "log_every_frames": 500,
        "capacity": 100_000,
        "hidden_dim": 256,
    },
}
# Named presets whose settings depend on the task's difficulty (applied right after the named preset).
NAMED_DIFFICULTY_PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "drqv2": {d: {"frames": frames} for d, frames in DRQV2_FRAMES.items()},
}
# Offline, `preset=` applies the named preset's settings that an offline run reads, then these: quick
# is a few-minute smoke run of every artefact counted in learner updates.
OFFLINE_NAMED_PRESETS: dict[str, dict[str, Any]] = {
    "quick": {"updates": 1000, "eval_every_updates": 500, "checkpoint_every_updates": 500, "log_every_updates": 100},
}
# Offline defaults (SPEC 7): V-D4RL's settings for the baselines (lr 3e-4, batch 256; TD3+BC n-step 3,
# CQL n-step 1), IQL's published expectile/beta/clip; with aux=taco the TACO authors' offline
# settings (K = 1, 3 on hopper_hop; batch 1024 for TD3+BC+TACO).
OFFLINE_AGENT_PRESETS: dict[str, dict[str, Any]] = {
    "bc": {"nstep": 1},
    "td3bc": {"nstep": 3},
    "cql": {"nstep": 1},
    "iql": {"nstep": 1},
}
OFFLINE_AUX_PRESETS: dict[str, dict[str, Any]] = {"taco": {"taco_k": 1}}
OFFLINE_AGENT_AUX_PRESETS: dict[tuple[str, str], dict[str, Any]] = {("td3bc", "taco"): {"batch_size": 1024}}
OFFLINE_TASK_AUX_PRESETS: dict[tuple[str, str], dict[str, Any]] = {("hopper_hop", "taco"): {"taco_k": 3}}
OFFLINE_TASK_PRESETS: dict[str, dict[str, Any]] = {
    "point_reach": {
        "action_repeat": 1,
        "image_size": 32,
        "hidden_dim": 256,
        "batch_size": 64,
        "eval_episodes": 5,
        "updates": 2000,
        "eval_every_updates": 500,
        "checkpoint_every_updates": 1000,
        "log_every_updates": 100,
        "std_schedule": "linear(1.0,0.1,1000)",
    },
}

# Fields that do not change what a run computes: left out of the run-directory hash, so that
# `frames=...` extends a run and `device=...` moves it.
UNHASHED = (
    "root",
    "run_dir",
    "frames",
    "device",
    "replay_device",
    "save_video",
    "video_size",
    "log_every_frames",
    "checkpoint_every_frames",
    "env_overlap",
    "cpu_malloc",
    "updates",
    "log_every_updates",
    "checkpoint_every_updates",
    "logger",
    "wandb_project",
    "wandb_entity",
    "wandb_group",
    "eval_workers",
)  # eval_workers: the same episodes (on a GPU: actions equal to float rounding)


class ConfigError(ValueError):
    """A bad override or value; the message says what was wrong and what is expected."""


def field_names(schema: type[Config] = Config) -> list[str]:
    names = [f.name for f in dataclasses.fields(schema)]
    return [n for n in names if n not in ONLINE_ONLY] if schema is OfflineConfig else names


def help_text(schema: type[Config] = Config) -> str:
    lines = []
    names = set(field_names(schema))
    for f in dataclasses.fields(schema):
        if f.name in names:
            lines.append(f"  {f.name + '=' + str(f.default):<36} {f.metadata['help']}")
    return "\n".join(lines)


def _parse(overrides: list[str], schema: type[Config] = Config) -> dict[str, Any]:
    names = field_names(schema)
    command = "offline" if schema is OfflineConfig else "train"
    for item in overrides:
        key, sep, _ = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"malformed override {item!r}: expected key=value (e.g. task=cheetah_run)")
        if key in ONLINE_ONLY and schema is OfflineConfig:
            raise ConfigError(
                f"{key!r} is an online setting; an offline run counts learner updates "
                "(updates=, eval_every_updates=, checkpoint_every_updates=, log_every_updates=)"
            )
        if key not in names:
            close = difflib.get_close_matches(key, names, n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(close)}?" if close else f"; `taco {command} --help` lists them"
            raise ConfigError(f"unknown config key {key!r}{hint}")
    try:
        # OmegaConf types to_container as any container (any key type); a dotlist's is a str-keyed dict
        return OmegaConf.to_container(OmegaConf.from_dotlist(list(overrides)))  # type: ignore[return-value]
    except OmegaConfBaseException as e:
        raise ConfigError(f"could not parse overrides {overrides}: {e}") from None


def resolve(overrides: list[str] | tuple[str, ...] = (), *, offline: bool = False) -> Config:
    """Defaults, presets, then overrides -> a validated Config (an OfflineConfig with `offline`)."""
    schema = OfflineConfig if offline else Config
    user = _parse(list(overrides), schema)
    for f in dataclasses.fields(schema):  # `key=` with nothing after it (OmegaConf reads None)
        if f.name in user and user[f.name] is None:
            if f.type not in (str, "str"):
                raise ConfigError(f"{f.name}= is empty: expected a value of type {getattr(f.type, '__name__', f.type)}")
            user[f.name] = ""  # the field's rule says what a valid one is
    if offline and user.get("dataset"):
        _task_of_dataset(user)
    base = schema()
    if user.get("task") in ALIASES:  # e.g. ball_in_cup_catch: the run is cup_catch's
        user["task"] = ALIASES[user["task"]]
    task, aux, agent = (str(user.get(k, getattr(base, k))) for k in ("task", "aux", "agent"))
    preset = user.get("preset", base.preset) or "paper"
    if preset not in NAMED_PRESETS:
        raise ConfigError(f"unknown preset {preset!r}: expected one of {sorted(NAMED_PRESETS)}")
    if offline:
        named = {k: v for k, v in NAMED_PRESETS[preset].items() if k not in ONLINE_ONLY}
        named.update(OFFLINE_NAMED_PRESETS.get(preset, {}))
        layers = [
            OFFLINE_TASK_PRESETS.get(task, {}),
            OFFLINE_AGENT_PRESETS.get(agent, {}),
            OFFLINE_AUX_PRESETS.get(aux, {}),
            OFFLINE_AGENT_AUX_PRESETS.get((agent, aux), {}),
            OFFLINE_TASK_AUX_PRESETS.get((task, aux), {}),
            named,
            user,
        ]
    else:
        difficulty = TASK_TABLE[task].difficulty if task in TASK_TABLE else None
        by_difficulty = NAMED_DIFFICULTY_PRESETS.get(preset, {}).get(difficulty or "", {})
        layers = [TASK_PRESETS.get(task, {}), AUX_PRESETS.get(aux, {}), NAMED_PRESETS[preset], by_difficulty, user]
    merged = OmegaConf.structured(schema)
    try:
        for layer in layers:
            merged = OmegaConf.merge(merged, layer)
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None) or getattr(e, "key", "?")
        expected = next((f.type for f in dataclasses.fields(schema) if f.name == key), "?")
        raise ConfigError(f"bad value for {key}: {str(e).splitlines()[0]} (expected {expected})") from None
    # OmegaConf types to_container as any container (any key type); a dataclass's is a str-keyed dict
    cfg = schema(**OmegaConf.to_container(merged))  # type: ignore[arg-type]
    validate(cfg)
    return cfg


def _task_of_dataset(user: dict[str, Any]) -> None:
    """An offline run's task is its dataset's (dataset.json records it): set it where `task=` is not
    given, refuse a `task=` that differs. A dataset.json that cannot be read leaves the task alone
    (opening the dataset says what is wrong with it)."""
    dataset = str(user["dataset"])
    try:
        recorded = json.loads((Path(dataset).expanduser() / "dataset.json").read_text()).get("task")
    except (OSError, ValueError, AttributeError):
        return
    if not isinstance(recorded, str) or not recorded:
        return
    if "task" not in user:
        user["task"] = recorded
    elif str(user["task"]) != recorded:
        raise ConfigError(
            f"task={user['task']} but dataset {dataset} was recorded on {recorded}: leave task= out "
            f"(the dataset's task is used) or pass a dataset of {user['task']}"
        )


# ---------------------------------------------------------------- validation
# One rule per field: given the value (and the whole config, for rules that depend on other fields),
# the text of what is expected when the value is bad, else None. Bool fields are typed by OmegaConf
# and need none; every other field must have a rule here (a test checks it).
def _int_at_least(lo: int) -> Callable[[Any, Config], str | None]:
    return lambda v, cfg: None if v >= lo else ("a positive integer" if lo == 1 else f"an integer >= {lo}")


def _finite(lo: float, hi: float = math.inf, lo_open: bool = True) -> Callable[[Any, Config], str | None]:
    """A finite float above `lo` (or at it, unless `lo_open`) and at most `hi`."""

    def rule(v: float, cfg: Config) -> str | None:
        if math.isfinite(v) and (v > lo if lo_open else v >= lo) and v <= hi:
            return None
        if hi == math.inf:
            return f"a finite number {'>' if lo_open else '>='} {lo:g}"
        return f"a number in {'(' if lo_open else '['}{lo:g}, {hi:g}]"

    return rule


def _choice(*allowed: str) -> Callable[[Any, Config], str | None]:
    return lambda v, cfg: None if v in allowed else f"one of {', '.join(allowed)}"


def _device(v: str, cfg: Config) -> str | None:
    return None if re.fullmatch(r"auto|cpu|cuda(:\d+)?", v) else "auto, cpu, cuda or cuda:N"


def _image_size(v: int, cfg: Config) -> str | None:
    from taco_rl.envs import get_task_spec
    from taco_rl.envs.dmc import MANIPULATION_IMAGE_SIZE

    if get_task_spec(cfg.task).kind == "manipulation" and v != MANIPULATION_IMAGE_SIZE:
        size = MANIPULATION_IMAGE_SIZE
        return f"{size} for {cfg.task} (its camera renders {size}x{size} only)"
    if v < MIN_IMAGE_SIZE:
        return f"at least {MIN_IMAGE_SIZE} (the smallest frame the encoder can take)"
    return None


def _horizon(cfg: Config) -> int:
    """Steps after a sampled index that a batch reads (n-step return, TACO's action sequence)."""
    return max(cfg.nstep, cfg.taco_k if cfg.aux == "taco" else 0)


def _seed_frames(v: int, cfg: Config) -> str | None:
    need = _horizon(cfg) * cfg.action_repeat
    if v >= need:
        return None
    return (
        f"at least {need} (max(nstep, taco_k) * action_repeat: the first update needs one full sequence in the replay)"
    )


def _capacity(v: int, cfg: Config) -> str | None:
    if v <= _horizon(cfg):
        return f"more than max(nstep, taco_k) = {_horizon(cfg)} transitions"
    return None if v >= cfg.batch_size else f"at least batch_size = {cfg.batch_size} transitions"


def _std_schedule(v: str, cfg: Config) -> str | None:
    expected = "a number >= 0 or linear(init,final,steps) with init, final >= 0 and steps > 0"
    try:
        values = [float(v)]
    except ValueError:
        match = re.fullmatch(r"\s*linear\(([^,]+),([^,]+),([^,]+)\)\s*", v)
        if not match:
            return expected
        try:
            values = [float(g) for g in match.groups()]
        except ValueError:
            return expected
        if not values[2] > 0:
            return expected
    return None if all(math.isfinite(x) and x >= 0 for x in values) else expected


def _weight(name: str) -> Callable[[Any, Config], str | None]:
    def rule(v: float, cfg: Config) -> str | None:
        if not (math.isfinite(v) and v >= 0):
            return "a finite number >= 0 (0 turns the term off)"
        if cfg.aux == "curl" and name == "curl_weight" and v <= 0:
            return "> 0 with aux=curl (use aux=none for no auxiliary loss)"
        if cfg.aux == "taco" and max(cfg.taco_weight, cfg.curl_weight, cfg.reward_weight) <= 0:
            return "> 0 for at least one of taco_weight, curl_weight, reward_weight with aux=taco (else use aux=none)"
        return None

    return rule


def _resume_from(v: str, cfg: Config) -> str | None:
    if not v:
        return None
    folder = Path(v).expanduser()
    if not ((folder / "checkpoint" / "state.pt").exists() or (folder / "checkpoint" / "state.prev.pt").exists()):
        return "a run directory with a checkpoint (checkpoint/state.pt)"
    return None


def _agent(v: str, cfg: Config) -> str | None:
    offline = isinstance(cfg, OfflineConfig)
    allowed, other = (OFFLINE_AGENT_NAMES, ONLINE_AGENT_NAMES) if offline else (ONLINE_AGENT_NAMES, OFFLINE_AGENT_NAMES)
    if v in other:
        command = "taco train" if offline else "taco offline"
        return (
            f"one of {', '.join(allowed)} ({v} is {'an online' if offline else 'an offline'} learner: use `{command}`)"
        )
    return None if v in allowed else f"one of {', '.join(allowed)}"


def _logger(v: str, cfg: Config) -> str | None:
    sinks = [s.strip() for s in v.split(",")]
    if v != "none" and (not all(s in ("tensorboard", "wandb") for s in sinks) or len(set(sinks)) != len(sinks)):
        return "tensorboard, wandb, tensorboard,wandb or none"
    if "wandb" in sinks:
        import importlib.util

        if importlib.util.find_spec("wandb") is None:
            return "a logger whose package is installed (wandb is not: pip install 'taco-rl[wandb]')"
    return None


RULES: dict[str, Callable[[Any, Config], str | None]] = {
    "agent": _agent,
    "aux": _choice(*AUX_KINDS),
    "preset": lambda v, cfg: None if (v or "paper") in NAMED_PRESETS else f"one of {', '.join(NAMED_PRESETS)}",
    "seed": _int_at_least(0),
    "device": _device,
    "precision": _choice("fp32", "bf16"),
    "root": lambda v, cfg: None if v.strip() else "a folder name",
    "run_dir": lambda v, cfg: None,  # any path; prepare_run_dir says when it cannot be written
    "resume_from": _resume_from,
    "action_repeat": _int_at_least(1),
    "frame_stack": _int_at_least(1),
    "image_size": _image_size,
    "frames": _int_at_least(1),
    "seed_frames": _seed_frames,
    "expl_steps": _int_at_least(0),
    "eval_every_frames": _int_at_least(1),
    "eval_episodes": _int_at_least(1),
    "checkpoint_every_frames": _int_at_least(1),
    "log_every_frames": _int_at_least(1),
    "capacity": _capacity,
    "replay_device": _choice("auto", "cpu"),
    "batch_size": _int_at_least(1),
    "nstep": _int_at_least(1),
    "gamma": _finite(0.0, 1.0),
    "lr": _finite(0.0, lo_open=False),
    "feature_dim": _int_at_least(1),
    "hidden_dim": _int_at_least(1),
    "critic_tau": _finite(0.0, 1.0),
    "update_every_steps": _int_at_least(1),
    "num_envs": _int_at_least(1),
    "std_schedule": _std_schedule,
    "std_clip": _finite(0.0, lo_open=False),
    "init_alpha": _finite(0.0),
    "taco_k": _int_at_least(1),
    "taco_weight": _weight("taco_weight"),
    "curl_weight": _weight("curl_weight"),
    "reward_weight": _weight("reward_weight"),
    "latent_action_dim": _int_at_least(0),
    "optimizer": lambda v, cfg: (
        _choice("reference", "single")(v, cfg)
        or (
            "reference for agent=bc (single sums the critic and auxiliary losses; bc has no critic)"
            if v == "single" and cfg.agent == "bc"
            else None
        )
    ),
    "env_overlap": _choice("auto", "thread", "serial"),
    "cpu_malloc": _choice("keep", "system"),
    "eval_workers": lambda v, cfg: None if v == "auto" or re.fullmatch(r"\d+", v) else "auto or an integer >= 0",
    "video_size": _int_at_least(1),
    "logger": _logger,
    "wandb_project": lambda v, cfg: None if v.strip() else "a W&B project name",
    "wandb_entity": lambda v, cfg: None,
    "wandb_group": lambda v, cfg: None,  # any name; W&B checks them
    # offline (OfflineConfig)
    "dataset": lambda v, cfg: None,  # checked when opened (DatasetError names what is wrong)
    "updates": _int_at_least(1),
    "eval_every_updates": _int_at_least(1),
    "checkpoint_every_updates": _int_at_least(1),
    "log_every_updates": _int_at_least(1),
    "bc_alpha": _finite(0.0, lo_open=False),
    "cql_alpha": _finite(0.0, lo_open=False),
    "cql_temp": _finite(0.0),
    "cql_samples": _int_at_least(1),
    "iql_expectile": lambda v, cfg: None if 0 < v < 1 else "a number in (0, 1)",
    "iql_beta": _finite(0.0, lo_open=False),
    "iql_max_weight": _finite(0.0),
}


def _by_type(kind: Any) -> Callable[[Any, Config], str | None] | None:
    """The rule of a field that RULES does not name: a finite float, an integer >= 0."""
    if kind in (float, "float"):
        return lambda v, cfg: None if math.isfinite(v) else "a finite number"
    if kind in (int, "int"):
        return _int_at_least(0)
    return None


def validate(cfg: Config) -> None:
    """Check every field before anything is built: the first bad one raises a ConfigError naming the
    key, the value and what is expected (the task first: other rules depend on it)."""
    from taco_rl.envs import get_task_spec

    get_task_spec(cfg.task)  # UnknownTaskError naming the closest tasks
    offline = isinstance(cfg, OfflineConfig)
    for f in dataclasses.fields(cfg):
        if offline and f.name in ONLINE_ONLY:  # not read by an offline run
            continue
        rule = RULES.get(f.name) or _by_type(f.type)
        value = getattr(cfg, f.name)
        expected = rule(value, cfg) if rule is not None else None
        if expected is not None:
            raise ConfigError(f"{f.name}={value!r}: expected {expected}")


# Fields that enter the hash only when set, so that adding them left earlier run directories' names as they were.
HASHED_IF_SET = ("resume_from", "num_envs")


def config_hash(cfg: Config) -> str:
    data = {
        k: v
        for k, v in dataclasses.asdict(cfg).items()
        if k not in UNHASHED and not (k in HASHED_IF_SET and v == getattr(Config, k))
    }
    return hashlib.sha1(json.dumps(data, sort_keys=True).encode()).hexdigest()[:8]


def run_directory(cfg: Config) -> Path:
    if cfg.run_dir:
        return Path(cfg.run_dir).expanduser().resolve()
    name = f"seed{cfg.seed}-{config_hash(cfg)}"
    return (Path(cfg.root).expanduser() / cfg.task / f"{cfg.agent}-{cfg.aux}" / name).resolve()


def to_yaml(cfg: Config) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))
