"""Minari datasets (Farama): ``metadata.json`` + ``main_data.hdf5`` with ``episode_{i}`` groups.

An episode group holds ``observations`` (T+1, ...), ``actions`` (T, A), ``rewards`` (T,),
``terminations`` and ``truncations`` (T,). Pixel observations are HWC uint8 images, either raw
arrays or, as Minari 0.5 writes by default, one JPEG per frame (lossy), or CHW uint8 frame stacks
(T+1, 3S, H, W), which Minari stores raw (not an image space to it): what its DataCollector records
around ``gymnasium.make("taco/<task>-v0")``. The observation space recorded in ``metadata.json`` says
which: an (H, W, 3) Box holds images (whatever H and W are), a (3S, H, W) Box of any other last axis
holds frame stacks; the arrays must have its shape. Of a stack only the newest frame is kept, as the
DrQ-v2 importer does, once the stacks are checked to slide by one frame and to start with the reset
frame repeated. Import reads both (JPEG frames are decoded with Pillow, and the dataset's source says
so); a Dict observation space needs the image key (``obs_key=``) unless exactly one entry is an
image. A transition's discount is 0 where ``terminations`` is set, else 1.

Export always writes raw frames (``jpeg_encoding=False``): JPEG would change the pixels, and a
dataset exported and imported again must be the same dataset bit for bit. Its env spec is
``taco/<task>-frame-v0`` (taco_rl.envs.frame_env: the task emitting single HWC frames, the dataset's
observation space, at the data's action repeat), so ``recover_environment()`` works; its reference
scores are the task's return range (0 and 1000 on DMC) for ``minari.get_normalized_score``; its
algorithm name says what produced the data (``random``, ``drqv2+taco policy``, ``imported from
vd4rl-hdf5``), never a local path. It goes through Minari's
own writer, so ``minari.load_dataset(ID)`` reads the result. Import never downloads: a dataset ID
is looked up only under the local Minari root (``MINARI_DATASETS_PATH`` or ``~/.minari/datasets``).
IDs follow Minari's own ``namespace/name-vN`` grammar, as ``taco/<task>/<kind>-v0`` (e.g.
``taco/walker_walk/medium-v0``, like Minari's ``mujoco/pusher/expert-v0``). Import takes the task
from the dataset's env spec when it is one of ours (``taco/<task>-frame-v0``, ``taco/<task>-v0``),
whatever the ID.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from taco_rl.runners.data.datasets import DatasetError, iter_episodes, load_dataset
from taco_rl.runners.data.formats.common import Episode, Plan, actions, check_same, frame_shape, frames_chw, vector

MAIN_FILE = "main_data.hdf5"
METADATA_FILE = "metadata.json"
EPISODE_KEYS = ("observations", "actions", "rewards", "terminations")


# ------------------------------------------------------------------------------------------------ import
def locate(path_or_id: str | os.PathLike) -> Path:
    """The folder holding ``metadata.json`` and ``main_data.hdf5`` for a path or a local dataset ID."""
    p = Path(path_or_id).expanduser()
    for cand in (p, p / "data"):
        if (cand / METADATA_FILE).is_file():
            return cand
    if p.exists():
        raise DatasetError(f"{p}: not a Minari dataset ({METADATA_FILE} not found in it or in its data/ folder)")
    from minari.storage import get_dataset_path

    local = Path(get_dataset_path(str(path_or_id))) / "data"
    if (local / METADATA_FILE).is_file():
        return local
    raise DatasetError(
        f"{path_or_id!r}: no such folder, and no local Minari dataset with that ID under "
        f"{get_dataset_path()} (nothing is downloaded: run `minari download {path_or_id}` first)"
    )


def _episode_names(h5: Any, file: Path) -> list[str]:
    names = [k for k in h5 if re.fullmatch(r"episode_\d+", k)]
    if not names:
        raise DatasetError(f"{file}: no episode_{{i}} groups (empty dataset?)")
    return sorted(names, key=lambda k: int(k.split("_")[1]))


def _obs_node(group: Any, file: Path, obs_key: str | None) -> tuple[Any, str, str | None]:
    """The observations' array, its path, and its entry in a Dict observation space (None: not a Dict)."""
    import h5py

    where = f"{group.name}/observations"
    if "observations" not in group:
        raise DatasetError(f"{file}: missing key '{where}'")
    node = group["observations"]
    if isinstance(node, h5py.Dataset):
        if obs_key:
            raise DatasetError(f"{file}: '{where}' is one array; obs_key={obs_key} applies to Dict observations")
        return node, where, None
    if obs_key:
        if obs_key not in node:
            raise DatasetError(f"{file}: missing key '{where}/{obs_key}' (has {sorted(node.keys())})")
        return node[obs_key], f"{where}/{obs_key}", obs_key
    images = [k for k, v in node.items() if isinstance(v, h5py.Dataset) and _image_like(v)]
    if len(images) != 1:
        raise DatasetError(
            f"{file}: '{where}' is a Dict with entries {sorted(node.keys())}; pass obs_key= to name the image entry"
        )
    return node[images[0]], f"{where}/{images[0]}", images[0]


def _image_like(ds: Any) -> bool:
    return ds.dtype == np.uint8 and (ds.ndim == 4 or ds.ndim == 2 or ds.dtype.kind == "O")


def _is_jpeg(ds: Any) -> bool:
    import h5py

    return ds.ndim in (1, 2) and (ds.dtype == np.uint8 or h5py.check_vlen_dtype(ds.dtype) is not None)


def _recorded_space(meta: dict[str, Any], meta_file: Path, entry: str | None) -> dict[str, Any]:
    """The observation space metadata.json records (Minari stores it serialised as JSON text), or that
    of the Dict space's ``entry``."""
    text = meta.get("observation_space")
    if text is None:
        raise DatasetError(
            f"{meta_file}: records no observation_space (Minari writes one); without it HWC images cannot be "
            "told from CHW frame stacks"
        )
    try:
        space = json.loads(text) if isinstance(text, str) else text
    except ValueError as e:
        raise DatasetError(f"{meta_file}: observation_space is not readable JSON ({e})") from None
    if entry is not None:  # the observations are a Dict: so must the space be
        subspaces = space.get("subspaces") if isinstance(space, dict) and space.get("type") == "Dict" else None
        if not isinstance(subspaces, dict) or entry not in subspaces:
            raise DatasetError(f"{meta_file}: the recorded Dict observation space has no entry {entry!r}")
        space = subspaces[entry]
    if not isinstance(space, dict):
        raise DatasetError(f"{meta_file}: observation_space {space!r} is not a serialised space")
    return space


def _layout(space: dict[str, Any], meta_file: Path) -> tuple[str, int | None, tuple[int, ...]]:
    """(layout, channels, shape of one record) from the recorded observation space: Minari's image
    layout, an (H, W, 3) Box (whatever H and W are), or else a (3S, H, W) Box of CHW frame stacks,
    as DataCollector records around gymnasium.make("taco/<task>-v0")."""
    shape = space.get("shape")
    if space.get("type") != "Box" or not (
        isinstance(shape, list) and len(shape) == 3 and all(isinstance(n, int) and n > 0 for n in shape)
    ):
        raise DatasetError(
            f"{meta_file}: observation space {space.get('type')} of shape {shape}; expected a Box of "
            "(H, W, 3) images or of (3S, H, W) frame stacks"
        )
    if shape[2] == 3:
        return "hwc", 3, tuple(shape)
    return "chw", None, tuple(shape)


def _newest_of_stacks(raw: np.ndarray, file: Path, key: str) -> np.ndarray:
    """The newest frame of each (3S, H, W) stack, after checking that the stacks slide by one frame
    and that the first one repeats the reset frame (so the kept frames rebuild every stack)."""
    if raw.shape[1] == 3:
        return raw
    first = raw[0].reshape(-1, 3, *raw.shape[2:])
    if not (first == first[-1]).all():
        raise DatasetError(
            f"{file}: key '{key}' record 0 is a frame stack whose frames differ; expected the "
            "reset frame repeated (as taco-rl's FrameStack and DrQ-v2 start an episode)"
        )
    bad = np.flatnonzero((raw[1:, :-3] != raw[:-1, 3:]).reshape(len(raw) - 1, -1).any(axis=1))
    if len(bad):
        raise DatasetError(
            f"{file}: key '{key}' record {bad[0] + 1}: its older frames are not record {bad[0]}'s "
            "newer ones; expected frame stacks that slide by one frame per step"
        )
    return np.ascontiguousarray(raw[:, -3:])


def _read_frames(ds: Any, file: Path, key: str, layout: str, channels: int | None) -> np.ndarray:
    try:
        raw = ds[()]
    except (OSError, ValueError, TypeError) as e:
        raise DatasetError(f"{file}: key '{key}' is unreadable, truncated or corrupt ({e})") from None
    if not _is_jpeg(ds):
        frames_chw(raw[:0], file, key, layout, channels)  # shape and dtype checked
        return _newest_of_stacks(raw, file, key) if layout == "chw" else frames_chw(raw, file, key, "hwc")
    from PIL import Image

    frames = []
    for i, b in enumerate(raw):
        try:
            img = np.asarray(Image.open(io.BytesIO(np.asarray(b, np.uint8).tobytes())).convert("RGB"))
        except Exception as e:  # noqa: BLE001 - Pillow raises several types for bad data
            raise DatasetError(f"{file}: key '{key}' frame {i} is not a decodable JPEG ({e})") from None
        frames.append(img)
    return frames_chw(np.stack(frames), file, key, "hwc")


def _read(group: Any, file: Path, key: str) -> np.ndarray:
    import h5py

    node = group.get(key)
    where = f"{group.name}/{key}"
    if not isinstance(node, h5py.Dataset):
        raise DatasetError(f"{file}: missing key '{where}'" if node is None else f"{file}: '{where}' is not an array")
    try:
        return node[()]
    except (OSError, ValueError, TypeError) as e:
        raise DatasetError(f"{file}: key '{where}' is unreadable, truncated or corrupt ({e})") from None


def _open(file: Path):
    import h5py

    try:
        return h5py.File(file, "r")
    except OSError as e:
        raise DatasetError(f"{file}: cannot open the HDF5 file, truncated or corrupt ({e})") from None


def scan(path_or_id: str | os.PathLike, obs_key: str | None = None) -> Plan:
    folder = locate(path_or_id)
    meta_file = folder / METADATA_FILE
    try:
        meta = json.loads(meta_file.read_text())
    except (OSError, ValueError) as e:
        raise DatasetError(f"{meta_file}: corrupt or unreadable ({e})") from None
    if not isinstance(meta, dict):
        raise DatasetError(f"{meta_file}: expected a JSON object")
    fmt = meta.get("data_format", "hdf5")
    if fmt != "hdf5":
        raise DatasetError(f"{meta_file}: data_format {fmt!r}; this importer reads Minari's hdf5 format")
    file = folder / MAIN_FILE
    if not file.is_file():
        raise DatasetError(f"{file}: missing")
    plan_eps: list[tuple[str, int, str, int | None]] = []
    fshape = action_dim = None
    slots, jpeg = 0, False
    with _open(file) as h5:
        for name in _episode_names(h5, file):
            g = h5[name]
            obs, where, entry = _obs_node(g, file, obs_key)
            n = obs.shape[0]
            layout, channels, record = _layout(_recorded_space(meta, meta_file, entry), meta_file)
            jpeg = jpeg or _is_jpeg(obs)
            if _is_jpeg(obs):  # Minari encodes (H, W, 3) image spaces only
                if layout != "hwc":
                    raise DatasetError(
                        f"{file}: '{where}' holds JPEG images, {meta_file.name} records CHW frame stacks {record}"
                    )
                fs = (3, record[0], record[1])
            else:
                if tuple(obs.shape[1:]) != record:
                    raise DatasetError(
                        f"{file}: key '{where}' has shape {obs.shape}, {meta_file.name} records an observation "
                        f"space of shape {record}"
                    )
                fs = frame_shape(obs.shape, obs.dtype, file, where, layout, channels)
            check_same("frame shape", fs, fshape, file, where)
            fshape = fs
            for key in ("actions", "rewards", "terminations"):
                if key not in g:
                    raise DatasetError(f"{file}: missing key '{g.name}/{key}'")
                if g[key].shape[:1] != (n - 1,):
                    raise DatasetError(
                        f"{file}: key '{g.name}/{key}' has shape {g[key].shape}, expected "
                        f"{n - 1} records ({where} has {n} = T+1)"
                    )
            a = g["actions"]
            actions(np.empty((0, *a.shape[1:]), a.dtype), file, f"{g.name}/actions", 0)
            a_dim = 1 if a.ndim == 1 else int(a.shape[1])
            check_same("action dim", a_dim, action_dim, file, f"{g.name}/actions")
            action_dim = a_dim
            if n >= 2:
                plan_eps.append((name, n, layout, channels))
                slots += n
    if not plan_eps or fshape is None or action_dim is None:  # (any episode kept sets both)
        raise DatasetError(f"{file}: no episode with at least one transition")

    def read() -> Iterator[Episode]:
        with _open(file) as h5:
            for name, n, layout, channels in plan_eps:
                g = h5[name]
                node, where, _ = _obs_node(g, file, obs_key)
                frames = _read_frames(node, file, where, layout, channels)
                if frames.shape[0] != n or tuple(frames.shape[1:]) != fshape:
                    raise DatasetError(
                        f"{file}: key '{where}' gives frames {frames.shape}, expected "
                        f"({n}, {', '.join(map(str, fshape))})"
                    )
                t = n - 1
                term = vector(_read(g, file, "terminations"), file, f"{g.name}/terminations", t) > 0
                yield (
                    frames,
                    actions(_read(g, file, "actions"), file, f"{g.name}/actions", t),
                    vector(_read(g, file, "rewards"), file, f"{g.name}/rewards", t),
                    1.0 - term.astype(np.float32),
                )

    source = {
        "format": "minari",
        "path": str(folder.resolve()),
        "dataset_id": meta.get("dataset_id"),
        "jpeg_decoded": jpeg,
    }
    return Plan(slots, len(plan_eps), fshape, action_dim, read, source, recorded_task(meta))


def recorded_task(meta: dict[str, Any]) -> str | None:
    """The task of a Minari dataset whose env spec is one of ours: ``taco/<task>-frame-v0`` (what
    export writes) or ``taco/<task>-v0`` (DataCollector around ``gymnasium.make``); its ``task``
    keyword, else the task its ID names. None for any other env (or none)."""
    from taco_rl.envs.registry import GYM_NAMESPACE
    from taco_rl.envs.tasks import TASKS

    spec = meta.get("env_spec")
    if isinstance(spec, str):  # Minari keeps the spec as EnvSpec.to_json()
        try:
            spec = json.loads(spec)
        except ValueError:
            return None
    if not isinstance(spec, dict):
        return None
    kwargs = spec.get("kwargs")
    task = kwargs.get("task") if isinstance(kwargs, dict) else None
    if task is None:
        match = re.fullmatch(rf"{GYM_NAMESPACE}/(\w+?)(?:-frame)?-v\d+", str(spec.get("id", "")))
        task = match.group(1) if match else None
    return task if task in TASKS else None


# ------------------------------------------------------------------------------------------------ export
@contextmanager
def _minari_root(root: str | os.PathLike | None):
    if root is None:
        yield
        return
    old = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(Path(root).expanduser().resolve())
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("MINARI_DATASETS_PATH", None)
        else:
            os.environ["MINARI_DATASETS_PATH"] = old


def export(
    dataset: str | os.PathLike, dataset_id: str, *, root: str | os.PathLike | None = None, progress: bool = False
) -> Path:
    """Write native dataset ``dataset`` as Minari dataset ``dataset_id`` (raw HWC frames, lossless);
    returns its folder. ``root`` overrides the Minari datasets root for this call."""
    import gymnasium as gym
    import minari
    from minari.data_collector import EpisodeBuffer
    from minari.storage import get_dataset_path

    from taco_rl.runners.data.formats.common import _bar

    replay, info = load_dataset(dataset, nstep=1, frame_stack=1)
    with _minari_root(root):
        target = Path(get_dataset_path(dataset_id))
        if target.exists():
            raise DatasetError(f"{target}: a Minari dataset {dataset_id!r} already exists; choose another ID")
        c, h, w = info["frame_shape"]
        bar = _bar(info["episodes"], progress)

        def episodes() -> Iterator[Any]:
            for frames, acts, rews, discs in iter_episodes(replay):
                bad = (discs != 0) & (discs != 1)
                if bool(bad.any()):
                    raise DatasetError(
                        f"{info['path']}: discount {float(discs[bad][0])} cannot be written as a Minari "
                        "termination flag (only 0 = terminal and 1 are)"
                    )
                term = (discs == 0).numpy()
                trunc = np.zeros_like(term)
                trunc[-1] = not term[-1]
                bar.update(1)
                yield EpisodeBuffer(
                    observations=frames.numpy().transpose(0, 2, 3, 1),
                    actions=acts.numpy(),
                    rewards=rews.numpy(),
                    terminations=term,
                    truncations=trunc,
                )

        obs_space = gym.spaces.Box(0, 255, (h, w, c), np.uint8)
        act_space = gym.spaces.Box(-1.0, 1.0, (info["action_dim"],), np.float32)
        spec, scores = _env_spec(info, h, w), _reference_scores(info.get("task"))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Minari warns about unset optional metadata (author, URL)
                minari.create_dataset_from_buffers(
                    dataset_id,
                    episodes(),
                    env=spec,
                    observation_space=obs_space,
                    action_space=act_space,
                    data_format="hdf5",
                    jpeg_encoding=False,
                    algorithm_name=algorithm_name(info.get("source")),
                    description=f"taco-rl dataset of task {info['task']} ({info['checksum']})"
                    + (f"; scores normalised by the task's return range [0, {scores[1]:g}]" if scores else ""),
                    requirements=["taco-rl"],
                    **({"ref_min_score": scores[0], "ref_max_score": scores[1]} if scores else {}),
                )
        except DatasetError:
            shutil.rmtree(target, ignore_errors=True)  # never leave a half-written dataset behind
            raise
        except ValueError as e:  # Minari's own refusals (e.g. a malformed dataset ID)
            shutil.rmtree(target, ignore_errors=True)
            raise DatasetError(f"Minari refused dataset ID {dataset_id!r}: {e}") from None
        except BaseException:
            shutil.rmtree(target, ignore_errors=True)
            raise
        finally:
            bar.close()
    return target


def algorithm_name(source: Any) -> str:
    """A short name for what produced the data (no local paths): the policy of `taco data collect`,
    the learner of `from-run`, the format an import came from."""
    src = source if isinstance(source, dict) else {}
    kind = src.get("kind") or ("import" if "format" in src else None)

    def learner() -> str:
        aux = src.get("aux")
        return f"{src.get('agent', 'unknown')}{'+' + aux if aux and aux != 'none' else ''}"

    if kind == "collect":
        if src.get("policy") == "random":
            return "random"
        noise = src.get("noise") or 0
        return f"{learner()} policy" + (f", action noise {noise:g}" if noise else "")
    if kind == "from-run":
        return f"{learner()} replay buffer"
    if kind == "import":
        return f"imported from {src.get('format', 'another format')}"
    if kind == "concat":
        return f"concatenation of {len(src.get('inputs', []))} datasets"
    return "taco-rl dataset"


def _reference_scores(task: str | None) -> tuple[float, float] | None:
    """(ref_min, ref_max) = the task's episode-return range where it is known, so that
    minari.get_normalized_score gives return / max (SPEC 7's normalised score / 100 on DMC)."""
    from taco_rl.envs.tasks import TASKS, max_return

    return (0.0, float(max_return(task))) if task in TASKS else None


def _env_spec(info: dict[str, Any], h: int, w: int) -> Any:
    """The spec of an env that emits the dataset's observations (single (H, W, 3) frames), with the
    action repeat the data was recorded at (the task's default when the source does not say)."""
    from taco_rl.envs.frame_env import frame_env_spec
    from taco_rl.envs.tasks import TASKS
    from taco_rl.runners.core.config import resolve

    task = info.get("task")
    if task not in TASKS or h != w:
        return None
    source = info.get("source")
    src = source if isinstance(source, dict) else {}
    repeat = src.get("action_repeat") or resolve([f"task={task}"]).action_repeat
    return frame_env_spec(
        task, action_repeat=int(repeat), image_size=h, fast_render=bool(src.get("fast_render", False))
    )
