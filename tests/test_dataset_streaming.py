"""Datasets are written episode by episode into their files: the bytes are those of the in-memory
path (a whole Replay saved by ``Replay.save``, and figures recorded from the writer that built it in
memory), and the writer's memory does not grow with the dataset."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest
from test_data_formats import brute_vd4rl_hdf5, write_vd4rl_hdf5

from taco_rl.runners.data.convert import concat, import_dataset
from taco_rl.runners.data.datasets import DatasetError, DatasetWriter, dataset_info, new_replay, verify_checksum

ROOT = Path(__file__).resolve().parents[1]

# dataset.json of these inputs as written by the in-memory writer (a whole Replay built, then saved)
# before datasets were streamed; "created" and "source" (paths) aside, streaming must give the same
RECORDED = {
    "A": {
        "episodes": 6,
        "transitions": 26,
        "slots": 32,
        "episode_length": {"min": 1, "max": 7},
        "return": {"min": -1.1206897050142288, "mean": 1.8223911207169294, "max": 4.300864428281784},
        "checksum": "sha256:d411a68eb717d848e8111e83b58fdd149cd9484d50558eeb7efa3871ccfc402b",
    },
    "C": {
        "episodes": 8,
        "transitions": 37,
        "slots": 45,
        "episode_length": {"min": 1, "max": 9},
        "return": {"min": -1.1206897050142288, "mean": 1.4954383880831301, "max": 4.300864428281784},
        "checksum": "sha256:ca29a01ca485ec04599b1ed1a19051fdfc37959bc0171223ecbe5474d2095054",
    },
}


def _in_memory(episodes, path):
    """The in-memory path: every episode added to one Replay of the exact size, saved whole."""
    rb = new_replay(sum(len(e[0]) for e in episodes), episodes[0][0][0].shape, len(episodes[0][1][0]))
    for f, a, r, d in episodes:
        rb.add_episode(np.stack(f), np.stack(a), np.asarray(r, np.float32), np.asarray(d, np.float32))
    rb.save(path)
    return path


def _files(path):
    """Every file of a dataset or saved replay: storage files by name, meta.json without its ids."""
    out = {p.name: p.read_bytes() for p in next(path.glob("storage-*")).iterdir()}
    meta = json.loads((path / "meta.json").read_text())
    out["meta.json"] = {k: v for k, v in meta.items() if k not in ("storage", "save_id")}
    return out


def test_streamed_import_and_concat_are_byte_identical(tmp_path):
    write_vd4rl_hdf5(tmp_path / "a", [[4, 7], [5], [3, 1, 6]], seed=11)
    write_vd4rl_hdf5(tmp_path / "b", [[9, 2]], seed=12)
    import_dataset("vd4rl", str(tmp_path / "a"), str(tmp_path / "A"), task="walker_walk")
    import_dataset("vd4rl", str(tmp_path / "b"), str(tmp_path / "B"), task="walker_walk")
    concat([str(tmp_path / "A"), str(tmp_path / "B")], str(tmp_path / "C"))
    eps_a, eps_b = brute_vd4rl_hdf5(tmp_path / "a"), brute_vd4rl_hdf5(tmp_path / "b")
    for name, eps in (("A", eps_a), ("C", eps_a + eps_b)):
        got = _files(tmp_path / name)
        assert sorted(got) == [
            "actions.memmap",
            "discounts.memmap",
            "ep_start.memmap",
            "frames.memmap",
            "meta.json",
            "rewards.memmap",
        ]
        assert got == _files(_in_memory(eps, tmp_path / f"ref{name}")), name
        info = dataset_info(tmp_path / name)
        assert {k: info[k] for k in RECORDED[name]} == RECORDED[name], name
        assert verify_checksum(tmp_path / name) == RECORDED[name]["checksum"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["A", "B", "C", "a", "b", "refA", "refC"]


def _add(writer, episode):
    f, a, r, d = episode
    writer.add_episode(np.stack(f), np.stack(a), np.asarray(r, np.float32), np.asarray(d, np.float32))


def test_interrupted_or_short_stream_leaves_nothing(tmp_path):
    write_vd4rl_hdf5(tmp_path / "a", [[4, 3]])
    eps = brute_vd4rl_hdf5(tmp_path / "a")
    with pytest.raises(KeyboardInterrupt), DatasetWriter(tmp_path / "ds", 5 + 4, (3, 16, 16), 3) as w:
        _add(w, eps[0])
        assert len(list(tmp_path.glob(".ds.partial-*/storage-*/frames.memmap"))) == 1  # being filled
        raise KeyboardInterrupt
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]
    with (
        pytest.raises(DatasetError, match="counted up front"),
        DatasetWriter(tmp_path / "ds", 5 + 4 + 1, (3, 16, 16), 3) as w,  # one slot never written
    ):
        for ep in eps:
            _add(w, ep)
        w.finish(task="t", source="")
    with (
        pytest.raises(DatasetError, match="counted up front"),
        DatasetWriter(tmp_path / "ds", 5 + 3, (3, 16, 16), 3) as w,  # more slots than counted
    ):
        for ep in eps:
            _add(w, ep)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]


def test_saved_ring_is_read_from_its_files(tmp_path):
    """from-run's path: a saved replay whose ring wrapped, read from its files, gives the same dataset."""
    from test_datasets import make_episodes, replay_of

    from taco_rl.runners.core.replay import Replay
    from taco_rl.runners.data.datasets import write_dataset

    rb = replay_of(make_episodes([6, 7, 5, 8], seed=1), capacity=20)  # wraps; the first two episodes are gone
    rb.save(tmp_path / "ring")
    loaded = Replay.load(tmp_path / "ring")
    a = write_dataset(rb, tmp_path / "mem", task="t", source="")
    b = write_dataset(loaded, tmp_path / "files", task="t", source="", files=tmp_path / "ring")
    assert (a["slots"], a["checksum"]) == (b["slots"], b["checksum"]) == (15, verify_checksum(tmp_path / "files"))


CHILD = textwrap.dedent("""
    import json, resource, sys
    import numpy as np
    from taco_rl.runners.data.convert import concat, import_dataset
    from taco_rl.runners.data.datasets import new_replay
    from taco_rl.runners.data.formats import vd4rl

    src, out = sys.argv[1], sys.argv[2]
    def status(key):  # bytes; this process's own figures (getrusage's maxrss may carry the parent's
        with open("/proc/self/status") as fh:  # peak across a vfork + exec)
            return next(int(line.split()[1]) * 1024 for line in fh if line.startswith(key + ":"))
    def peak():
        try:
            return status("VmHWM")
        except OSError:  # no /proc: the peak getrusage reports
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    def now():
        try:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")  # the peak restarts from here
            return status("VmRSS")
        except OSError:
            return peak()  # can only understate growth
    import_dataset("vd4rl", src + "/warm", out + "_warm", task="walker_walk")  # every code path loaded once
    before = now()
    import_dataset("vd4rl", src + "/big", out, task="walker_walk")
    streamed = peak() - before
    before = now()
    concat([out, out], out + "_twice")  # reads its inputs an episode at a time too
    concat_grew = peak() - before
    before = now()
    plan = vd4rl.scan(src + "/big")  # the same episodes, held in one in-memory Replay
    rb = new_replay(plan.slots, plan.frame_shape, plan.action_dim)
    for ep in plan.read():
        rb.add_episode(*ep)
    print(json.dumps({"streamed": streamed, "concat": concat_grew, "in_memory": peak() - before}))
""")


def _big_hdf5(folder, episodes, steps, hw=84, seed=0):
    """One V-D4RL-style shard of ``episodes`` episodes, written an episode at a time."""
    g = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    n = episodes * (steps + 1)
    with h5py.File(folder / "shard.hdf5", "w") as f:
        obs = f.create_dataset("observation", (n, 3, hw, hw), np.uint8)
        for e in range(episodes):
            obs[e * (steps + 1) : (e + 1) * (steps + 1)] = g.integers(0, 256, (steps + 1, 3, hw, hw), dtype=np.uint8)
        f["action"] = g.uniform(-1, 1, (n, 6)).astype(np.float32)
        f["reward"] = g.uniform(size=n).astype(np.float32)
        f["step_type"] = np.tile(np.r_[0, np.ones(steps - 1), 2], episodes).astype(np.int64)
        f["discount"] = np.ones(n, np.float32)


def test_import_memory_is_bounded_by_an_episode_not_the_dataset(tmp_path):
    episodes, steps = 24, 100  # 84px: ~49 MB of frames, ~2.1 MB per episode
    _big_hdf5(tmp_path / "src" / "big", episodes, steps)
    _big_hdf5(tmp_path / "src" / "warm", 1, 3, seed=1)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    res = subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp_path / "src"), str(tmp_path / "ds")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        cwd=ROOT,
    )
    assert res.returncode == 0, res.stderr
    m = json.loads(res.stdout.strip().splitlines()[-1])
    size = dataset_info(tmp_path / "ds")["slots"] * 3 * 84 * 84
    streamed, in_memory = m["streamed"], m["in_memory"]
    print(
        f"dataset {size / 2**20:.1f} MiB: peak RSS grew {streamed / 2**20:.1f} MiB importing it, "
        f"{m['concat'] / 2**20:.1f} MiB concatenating it twice, {in_memory / 2**20:.1f} MiB holding it in memory"
    )
    assert in_memory > 0.9 * size  # the measure sees a whole dataset held in memory
    assert m["concat"] < size / 3 and dataset_info(tmp_path / "ds_twice")["slots"] == 2 * episodes * (steps + 1)
    assert streamed < size / 3  # streaming holds a few episodes at a time (~7 MiB measured), not the dataset
