"""`taco data ...`: make, import, combine, inspect and export offline datasets.

Every subcommand takes ``key=value`` arguments (like ``taco train``) after its positional ones;
``out=`` names the destination dataset folder, which must not exist yet (``overwrite=true`` replaces
it). Datasets are written atomically (see :mod:`taco_rl.runners.data.datasets`). The arguments are
checked before the modules that do the work (and torch) are imported.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
from collections.abc import Callable
from typing import Any

from taco_rl.runners.core.config import ENV_KEYS, Config, ConfigError

EPILOG = """examples:
  taco data collect policy=runs/walker_walk/drqv2-none/seed1-ab12cd34 episodes=200 noise=0.2 out=data/ww_noisy
  taco data collect task=point_reach policy=random episodes=50 out=data/pr_random
  taco data from-run runs/walker_walk/drqv2-none/seed1-ab12cd34 out=data/ww_medium_replay
  taco data concat data/ww_medium data/ww_expert out=data/ww_medium_expert
  taco data info data/ww_medium_expert verify=true
  taco data import vd4rl vd4rl/main/walker_walk/medium/84px task=walker_walk out=data/ww_medium
  taco data import drqv2 exp/buffer task=cheetah_run out=data/cr_replay
  taco data import minari mujoco/pusher/expert-v0 task=point_reach out=data/x     # local IDs or paths only
  taco data import minari taco/walker_walk/medium-v0 out=data/ww_medium           # task: from our env spec
  taco data export minari data/ww_medium taco/walker_walk/medium-v0              # root=DIR: Minari root
"""

DESCRIPTION = """Make, import, combine, inspect and export offline datasets (the native format: a saved
frame-once replay plus dataset.json). Every subcommand takes key=value arguments after its
positional ones; out= names the destination folder, which must not exist yet (overwrite=true
replaces it). A dataset appears only once completely written. Writing streams episode by
episode into files of the final size: memory holds about one episode, the disk the whole dataset.
Reading checks every array file's size; `info verify=true` (and the first load for training) hashes
the arrays against the recorded checksum."""
_BOOL = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def add_parser(sub: Any) -> None:
    """Register ``taco data`` and its subcommands on the top-level subparsers."""
    fmt = argparse.RawDescriptionHelpFormatter
    d = sub.add_parser(
        "data",
        help="offline datasets: collect, from-run, concat, info, import, export",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=fmt,
    )
    ds = d.add_subparsers(dest="data_command", required=True)
    specs = [
        (
            "collect",
            "roll out a run's checkpoint (or random actions) into a dataset",
            "policy=RUN_DIR|random episodes=N out=DIR [noise=0.2] [seed=0] [task=...] [device=cpu] [workers=1] "
            "[action_repeat= image_size= frame_stack= fast_render= (policy=random only)]",
        ),
        ("from-run", "turn a run's replay (its last checkpoint) into a dataset", "RUN_DIR out=DIR"),
        ("concat", "join datasets of the same task and shapes (e.g. medium + expert)", "A B [C ...] out=DIR"),
        ("info", "print task, image size, action dim, counts, returns and checksum", "DIR [verify=true] [json=true]"),
        (
            "import",
            "import vd4rl (84px hdf5 / 64px npz), drqv2 (replay npz) or minari (path or local ID)",
            "FORMAT PATH out=DIR [task=...] [obs_key=... (minari)]",
        ),
        ("export", "export a dataset as a Minari dataset (raw frames, lossless)", "minari DIR ID [root=MINARI_ROOT]"),
    ]
    for name, help_, usage in specs:
        p = ds.add_parser(
            name, help=help_, description=f"{help_}.\n\n  taco data {name} {usage}", epilog=EPILOG, formatter_class=fmt
        )
        p.add_argument("args", nargs="*", metavar="ARG|key=value")
        p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _split(
    items: list[str], keys: dict[str, Callable[[str], Any]], npos: tuple[int, int | None], usage: str
) -> tuple[list[str], dict[str, Any]]:
    """Positional arguments and typed ``key=value`` options; unknown keys name the closest ones."""
    pos, kv = [], {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or "/" in key or not key:
            pos.append(item)
            continue
        if key not in keys:
            close = difflib.get_close_matches(key, list(keys), n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(close)}?" if close else f"; expected {', '.join(keys) or 'none'}"
            raise ConfigError(f"unknown key {key!r}{hint} (usage: {usage})")
        try:
            kv[key] = keys[key](value)
        except (ValueError, KeyError):
            raise ConfigError(f"bad value {key}={value!r} (usage: {usage})") from None
    lo, hi = npos
    if len(pos) < lo or (hi is not None and len(pos) > hi):
        raise ConfigError(
            f"expected {lo if lo == hi else f'at least {lo}'} positional argument(s), got "
            f"{len(pos)}: {pos} (usage: {usage})"
        )
    return pos, kv


def _bool(v: str) -> bool:
    return _BOOL[v.lower()]


def _require_out(kv: dict[str, Any], usage: str) -> str:
    if not kv.get("out"):
        raise ConfigError(f"missing out=DIR, the dataset folder to write (usage: {usage})")
    return kv["out"]


def format_info(info: dict[str, Any], verified: bool = False) -> str:
    c, h, w = info["frame_shape"]
    r, length = info["return"], info.get("episode_length", {})
    lines = [
        ("dataset", info["path"]),
        ("task", info["task"]),
        ("images", f"{h}x{w}, {c} channels (uint8, one frame per step)"),
        ("action dim", info["action_dim"]),
        ("episodes", info["episodes"]),
        ("transitions", f"{info['transitions']} (episode length {length.get('min', '?')}..{length.get('max', '?')})"),
        ("return", f"min {r['min']:.2f}  mean {r['mean']:.2f}  max {r['max']:.2f}"),
        (
            "checksum",
            info["checksum"]
            + (
                "  (verified)" if verified else "  (not verified yet: verify=true, or the first load, hashes the files)"
            ),
        ),
        ("source", json.dumps(info["source"])),
    ]
    return "\n".join(f"{k:<12} {v}" for k, v in lines)


# ------------------------------------------------------------------------------------------------ dispatch
def run(args: argparse.Namespace) -> int:
    cmd, items, progress = args.data_command, args.args, not args.no_progress
    out_keys: dict[str, Callable[[str], Any]] = {"out": str, "overwrite": _bool}
    if cmd == "collect":
        usage = "taco data collect policy=RUN_DIR|random episodes=N out=DIR"
        keys: dict[str, Callable[[str], Any]] = {
            **out_keys,
            "policy": str,
            "episodes": int,
            "noise": float,
            "seed": int,
            "task": str,
            "device": str,
            "workers": int,
        }
        types = {f.name: f.type for f in dataclasses.fields(Config)}
        keys.update({k: (_bool if types[k] in (bool, "bool") else int) for k in ENV_KEYS})
        _, kv = _split(items, keys, (0, 0), usage)
        if "policy" not in kv or "episodes" not in kv:
            raise ConfigError(f"collect needs policy= and episodes= (usage: {usage})")
        env = {k: kv[k] for k in ENV_KEYS if k in kv}
        from taco_rl.runners.data.collect import collect

        info = collect(
            kv["policy"],
            kv["episodes"],
            _require_out(kv, usage),
            noise=kv.get("noise", 0.0),
            seed=kv.get("seed", 0),
            task=kv.get("task"),
            device=kv.get("device", "cpu"),
            env=env,
            overwrite=kv.get("overwrite", False),
            progress=progress,
            workers=kv.get("workers", 1),
        )
    elif cmd == "from-run":
        usage = "taco data from-run RUN_DIR out=DIR"
        pos, kv = _split(items, out_keys, (1, 1), usage)
        from taco_rl.runners.data.from_run import from_run

        info = from_run(pos[0], _require_out(kv, usage), overwrite=kv.get("overwrite", False))
    elif cmd == "concat":
        usage = "taco data concat A B [C ...] out=DIR"
        pos, kv = _split(items, out_keys, (2, None), usage)
        from taco_rl.runners.data.convert import concat

        info = concat(pos, _require_out(kv, usage), overwrite=kv.get("overwrite", False), progress=progress)
    elif cmd == "info":
        usage = "taco data info DIR [verify=true] [json=true]"
        pos, kv = _split(items, {"verify": _bool, "json": _bool}, (1, 1), usage)
        from taco_rl.runners.data.datasets import dataset_info, is_verified, verify_checksum

        info = dataset_info(pos[0])  # checks the array file sizes
        if kv.get("verify"):
            verify_checksum(pos[0])
        verified = is_verified(info)
        print(json.dumps({**info, "verified": verified}, indent=1) if kv.get("json") else format_info(info, verified))
        return 0
    elif cmd == "import":
        usage = "taco data import vd4rl|drqv2|minari PATH out=DIR [task=NAME] [obs_key=KEY]"
        pos, kv = _split(items, {**out_keys, "task": str, "obs_key": str}, (2, 2), usage)
        from taco_rl.runners.data.convert import import_dataset

        info = import_dataset(
            pos[0],
            pos[1],
            _require_out(kv, usage),
            task=kv.get("task"),
            obs_key=kv.get("obs_key"),
            overwrite=kv.get("overwrite", False),
            progress=progress,
        )
    else:  # export
        usage = "taco data export minari DIR ID [root=MINARI_ROOT]"
        pos, kv = _split(items, {"root": str}, (3, 3), usage)
        if pos[0] != "minari":
            raise ConfigError(f"export format {pos[0]!r}: expected minari (usage: {usage})")
        from taco_rl.runners.data.formats import minari as fmt_minari

        target = fmt_minari.export(pos[1], pos[2], root=kv.get("root"), progress=progress)
        print(f"wrote Minari dataset {pos[2]} at {target}")
        return 0
    from taco_rl.runners.data.datasets import dataset_info, is_verified

    out_info = dataset_info(kv["out"])
    print(format_info(out_info, is_verified(out_info)))
    return 0
