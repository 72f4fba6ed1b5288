"""logger=wandb in W&B's offline mode (no network): what the run wrote, read back from its .wandb files.

W&B's service, a separate process, writes a run's .wandb file: `run.finish()` returns before it has
(right after it the file held its 7-byte header only). The tests so wait, with a deadline, until each
file holds its run's final `exit` record, and read only whole records."""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path

import pytest

pytest.importorskip("wandb")
from wandb.proto import wandb_internal_pb2  # noqa: E402

from taco_rl.runners.core.config import ConfigError, resolve  # noqa: E402
from taco_rl.runners.online.train import Trainer  # noqa: E402
from taco_rl.runners.study.sweep import load_sweep  # noqa: E402

TINY = [
    "task=point_reach",
    "hidden_dim=32",
    "feature_dim=16",
    "batch_size=16",
    "seed_frames=100",
    "expl_steps=50",
    "eval_episodes=1",
    "eval_every_frames=100",
    "checkpoint_every_frames=100",
    "log_every_frames=50",
    "capacity=2000",
    "update_every_steps=4",
    "video_size=32",
    "logger=tensorboard,wandb",
]
BLOCK = 32 * 1024


def wandb_records(path: Path) -> list:
    """The records of a .wandb file: a 7-byte header (':W&B', magic, version), then LevelDB-log
    records (crc32, 2-byte length, type: 1 full, 2 first, 3 middle, 4 last) in 32 KiB blocks. A record
    the writer has not finished (the file ends inside it) is left out."""
    data = path.read_bytes()
    assert data[:4] == b":W&B", path
    records, pos, pending = [], 7, b""
    while pos + 7 <= len(data):
        left = BLOCK - pos % BLOCK
        if left < 7:  # a block's tail too short for a header is padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if length == 0 and kind == 0:
            break
        if pos + 7 + length > len(data):  # still being written
            break
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        pending += chunk
        if kind in (1, 4):
            rec = wandb_internal_pb2.Record()
            rec.ParseFromString(pending)
            records.append(rec)
            pending = b""
    return records


def finished_records(run_dir: Path, files: int, timeout: float = 120.0) -> list[list]:
    """The records of the run's `files` .wandb files (one per wandb.init: per trainer that logged),
    once each holds its `exit` record (the last one W&B writes for a finished run); an AssertionError
    after `timeout` seconds says what was there."""
    deadline = time.monotonic() + timeout
    while True:
        found = sorted((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
        records = [wandb_records(f) for f in found]
        ended = [any(r.WhichOneof("record_type") == "exit" for r in recs) for recs in records]
        if len(found) == files and all(ended):
            return records
        if time.monotonic() > deadline:
            raise AssertionError(f"after {timeout:g} s: {len(found)} of {files} .wandb files, finished: {ended}")
        time.sleep(0.1)


def read_run(run_dir: Path, files: int = 1) -> dict:
    """Every .wandb file under the run directory (one per trainer): run ids, config, history rows."""
    out = {"ids": [], "config": {}, "history": []}
    for records in finished_records(run_dir, files):
        for rec in records:
            kind = rec.WhichOneof("record_type")
            if kind == "run":
                out["ids"].append(rec.run.run_id)
                out["group"] = rec.run.run_group
                out["project"] = rec.run.project
            if kind in ("run", "config"):
                cfg = rec.run.config if kind == "run" else rec.config
                for item in cfg.update:
                    out["config"][item.key] = json.loads(item.value_json)
            if kind == "history":  # nested values (a video's fields) come as one item per leaf
                row: dict = {}
                for i in rec.history.item:
                    *path, leaf = [i.key] if i.key else list(i.nested_key)
                    node = row
                    for p in path:
                        node = node.setdefault(p, {})
                    node[leaf] = json.loads(i.value_json)
                out["history"].append(row)
    return out


def tensorboard_tags(run_dir: Path) -> set[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tb"))
    acc.Reload()
    return set(acc.Tags()["scalars"])


@pytest.fixture
def offline_wandb(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DISABLE_GIT", "true")


def test_wandb_gets_the_tensorboard_scalars_the_videos_and_the_config(tmp_path, offline_wandb):
    run = tmp_path / "run"
    Trainer(
        resolve([*TINY, "frames=300", f"run_dir={run}", "wandb_project=proj", "wandb_group=grp"]), progress=False
    ).train()
    got = read_run(run)
    assert len(got["ids"]) == 1 and (got["project"], got["group"]) == ("proj", "grp")
    assert got["config"]["task"] == "point_reach" and got["config"]["batch_size"] == 16  # the resolved config
    rows = [{k: v for k, v in h.items() if not k.startswith("_")} for h in got["history"]]
    scalar_keys = {k for r in rows for k, v in r.items() if k != "frame" and not isinstance(v, dict)}
    assert scalar_keys == tensorboard_tags(run)  # the same scalars as TensorBoard
    evals = [r for r in rows if "eval/episode_return" in r]
    csv_evals = (run / "eval.csv").read_text().splitlines()[1:]
    assert [r["frame"] for r in evals] == [int(line.split(",")[0]) for line in csv_evals] == [0, 100, 200, 300]
    assert [r["eval/episode_return"] for r in evals] == pytest.approx([float(line.split(",")[2]) for line in csv_evals])
    videos = [r for r in rows if "eval/video" in r]
    assert [r["frame"] for r in videos] == [0, 100, 200, 300]
    assert all(r["eval/video"]["_type"] == "video-file" for r in videos)


def test_a_resumed_run_continues_the_same_wandb_run_and_logs_each_frame_once(tmp_path, offline_wandb):
    run = tmp_path / "run"
    Trainer(resolve([*TINY, "frames=200", f"run_dir={run}"]), progress=False).train()
    first = json.loads((run / "wandb.json").read_text())
    time.sleep(1.1)  # W&B names offline run folders by the second: a resume within it would share the folder
    Trainer(resolve([*TINY, "frames=400", f"run_dir={run}"]), progress=False).train()
    got = read_run(run, files=2)
    assert got["ids"] == [first["id"], first["id"]]  # two trainers (as two processes would), one W&B run
    evals = [h["frame"] for h in got["history"] if "eval/episode_return" in h]
    assert evals == [0, 100, 200, 300, 400]
    train = [h["frame"] for h in got["history"] if "train/critic_loss" in h]
    assert train == sorted(set(train)) and train[-1] == 400


def test_resume_skips_what_an_earlier_process_sent_past_the_checkpoint(tmp_path, offline_wandb):
    """A run killed after logging frame 250 but checkpointed at 200 recomputes 200..250 exactly: W&B
    cannot drop points, so the resumed process sends only what comes after 250."""
    from taco_rl.runners.core.wandb_log import WandbSink

    (tmp_path / "wandb.json").write_text(json.dumps({"id": "abcd1234", "logged_through": 250}))
    sink = WandbSink(tmp_path, resumed=True, axis="frame", project="p", entity="", group="", config={})
    sent = []
    sink.run.log = lambda values: sent.append(values["frame"])
    for x in (200, 250, 300, 350):
        sink.log(x, {"train/x": 1.0})
    assert sent == [300, 350]
    assert json.loads((tmp_path / "wandb.json").read_text()) == {"id": "abcd1234", "logged_through": 350}
    sink.close()
    fresh = WandbSink(tmp_path, resumed=False, axis="frame", project="p", entity="", group="", config={})
    assert fresh.state["id"] != "abcd1234" and fresh.skip_through == -1  # a fresh start is a new W&B run
    fresh.close()


def test_sweep_groups_its_runs_and_bad_logger_values_are_refused(tmp_path):
    sweep = tmp_path / "my_ablation.yaml"
    sweep.write_text(f"tasks: [point_reach]\nseeds: [1, 2]\noverrides: {{root: {tmp_path}, logger: wandb}}\n")
    runs = load_sweep(sweep).runs
    assert len(runs) == 2 and all("wandb_group=my_ablation" in r.overrides for r in runs)
    assert all(r.cfg.wandb_group == "my_ablation" for r in runs)
    plain = tmp_path / "plain.yaml"
    plain.write_text(f"tasks: [point_reach]\nseeds: [1]\noverrides: {{root: {tmp_path}}}\n")
    assert not any("wandb_group" in o for o in load_sweep(plain).runs[0].overrides)
    for bad in ("logger=wandbb", "logger=wandb,wandb", "logger=", "wandb_project= "):
        with pytest.raises(ConfigError, match="expected"):
            resolve(["task=point_reach", bad])
    # the W&B settings do not change the run directory
    from taco_rl.runners.core.config import run_directory

    assert run_directory(resolve(["task=point_reach"])) == run_directory(resolve(["task=point_reach", "logger=wandb"]))
