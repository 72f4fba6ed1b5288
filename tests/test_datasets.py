"""The native dataset format: write (atomic, canonical), info, checksum, read-only load."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from taco_rl.runners.core.replay import Replay
from taco_rl.runners.data.datasets import (
    DATASET_FILE,
    DatasetError,
    dataset_device,
    dataset_info,
    iter_episodes,
    load_dataset,
    verify_checksum,
    write_dataset,
)

SHAPE = (3, 8, 8)


def make_episodes(lengths, action_dim=2, seed=0):
    """Random episodes: (frames (T+1,3,8,8) uint8, actions (T,A), rewards (T,), discounts (T,))."""
    g = np.random.default_rng(seed)
    eps = []
    for t in lengths:
        disc = np.ones(t, np.float32)
        if t % 2:
            disc[-1] = 0.0  # some episodes end in a true terminal
        eps.append(
            (
                g.integers(0, 256, (t + 1, *SHAPE), dtype=np.uint8),
                g.uniform(-1, 1, (t, action_dim)).astype(np.float32),
                g.normal(size=t).astype(np.float32),
                disc,
            )
        )
    return eps


def replay_of(episodes, capacity=None, action_dim=2):
    slots = sum(len(e[0]) for e in episodes)
    rb = Replay(capacity or slots, SHAPE, action_dim, nstep=1, seq_len=0)
    for f, a, r, d in episodes:
        rb.add(f[0], first=True)
        for i in range(len(a)):
            rb.add(f[i + 1], a[i], float(r[i]), float(d[i]))
    return rb


def assert_same_episodes(replay, episodes):
    got = list(iter_episodes(replay))
    assert len(got) == len(episodes)
    for (f, a, r, d), (f2, a2, r2, d2) in zip(got, episodes, strict=True):
        assert torch.equal(f, torch.from_numpy(f2))
        assert torch.equal(a, torch.from_numpy(a2))
        assert torch.equal(r, torch.from_numpy(r2))
        assert torch.equal(d, torch.from_numpy(d2))


def test_write_info_checksum_and_load(tmp_path):
    eps = make_episodes([5, 9, 4, 12])
    out = tmp_path / "ds"
    info = write_dataset(replay_of(eps), out, task="point_reach", source={"kind": "test"})
    assert sorted(os.listdir(tmp_path)) == ["ds"]  # no temporary folder left behind
    on_disk = dataset_info(out)
    assert on_disk["checksum"] == info["checksum"] == verify_checksum(out)
    assert (on_disk["episodes"], on_disk["transitions"], on_disk["slots"]) == (4, 30, 34)
    assert on_disk["frame_shape"] == list(SHAPE) and on_disk["action_dim"] == 2
    returns = [float(np.sum(r.astype(np.float64))) for _, _, r, _ in eps]
    assert on_disk["return"]["min"] == pytest.approx(min(returns))
    assert on_disk["return"]["max"] == pytest.approx(max(returns))
    assert on_disk["return"]["mean"] == pytest.approx(np.mean(returns))
    assert on_disk["episode_length"] == {"min": 4, "max": 12}

    rb, info2 = load_dataset(out, frame_stack=2, nstep=3, gamma=0.9, seq_len=4)
    assert (rb.frame_stack, rb.nstep, rb.gamma, rb.seq_len) == (2, 3, 0.9, 4)
    assert_same_episodes(rb, eps)
    # the same samples as the replay the dataset was made from, built with the same settings
    ref = replay_of(eps)
    ref = Replay.load(_saved(ref, tmp_path / "ref"), frame_stack=2, nstep=3, gamma=0.9, seq_len=4)
    torch.manual_seed(0)
    a = rb.sample(32)
    torch.manual_seed(0)
    b = ref.sample(32)
    for k in a.keys():
        assert torch.equal(a[k], b[k]), k
    # read-only: adding to the loaded replay never touches the files
    before = verify_checksum(out)
    rb.add(np.zeros(SHAPE, np.uint8), first=True)
    rb.add(np.full(SHAPE, 7, np.uint8), [0.5, 0.5], 1.0, 1.0)
    assert verify_checksum(out) == before


def _saved(rb, path):
    rb.save(path)
    return path


def test_wrapped_ring_keeps_whole_episodes(tmp_path):
    eps = make_episodes([6, 7, 5, 8], seed=1)
    rb = replay_of(eps, capacity=20)  # 30 slots through a 20-slot ring: the first two episodes are gone
    write_dataset(rb, tmp_path / "ds", task="t", source="ring")
    loaded, info = load_dataset(tmp_path / "ds", nstep=1)
    assert info["episodes"] == 2 and info["slots"] == 6 + 9
    assert_same_episodes(loaded, eps[2:])


def test_refuses_existing_destination_and_is_atomic(tmp_path, monkeypatch):
    eps = make_episodes([5, 5])
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("keep")
    with pytest.raises(DatasetError, match="already exists"):
        write_dataset(replay_of(eps), tmp_path / "busy", task="t", source="")
    assert (tmp_path / "busy" / "x").read_text() == "keep"

    # an interrupted write leaves nothing that looks like a dataset
    from taco_rl.runners.data import datasets as ds

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(ds, "_write_json", boom)
    with pytest.raises(KeyboardInterrupt):
        write_dataset(replay_of(eps), tmp_path / "new", task="t", source="")
    assert not (tmp_path / "new").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["busy"]


def test_bad_datasets_raise_dataset_error(tmp_path):
    with pytest.raises(DatasetError, match="no such dataset"):
        dataset_info(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="dataset.json: missing"):
        dataset_info(tmp_path / "empty")
    out = tmp_path / "ds"
    write_dataset(replay_of(make_episodes([3, 4])), out, task="t", source="")
    with pytest.raises(DatasetError, match="max\\(nstep, seq_len\\)=5"):
        load_dataset(out, nstep=5)
    info = json.loads((out / DATASET_FILE).read_text())
    (out / DATASET_FILE).write_text(json.dumps({**info, "slots": 99}))
    with pytest.raises(DatasetError, match="inconsistent"):
        load_dataset(out, nstep=1)
    (out / DATASET_FILE).write_text(json.dumps(info))
    frames = next(out.glob("storage-*")) / "frames.memmap"
    data = bytearray(frames.read_bytes())
    data[10] ^= 0xFF
    frames.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match="checksum mismatch"):
        verify_checksum(out)
    (out / DATASET_FILE).write_text("{not json")
    with pytest.raises(DatasetError, match="corrupt"):
        dataset_info(out)
    (out / "meta.json").unlink()
    (out / DATASET_FILE).write_text(json.dumps(info))
    with pytest.raises(DatasetError, match="meta.json: missing"):
        load_dataset(out)


def test_dataset_device_cpu(tmp_path):
    write_dataset(replay_of(make_episodes([3, 4])), tmp_path / "ds", task="t", source="")
    device, reason = dataset_device(tmp_path / "ds", "cpu")
    assert device == torch.device("cpu") and "memory-mapped" in reason


def test_dataset_device_gpu_when_it_fits(tmp_path, monkeypatch):
    write_dataset(replay_of(make_episodes([3, 4])), tmp_path / "ds", task="t", source="")
    need = dataset_info(tmp_path / "ds")["slots"] * (3 * 8 * 8 + 4 * 2 + 17)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (2 * need + 2, 10**12))
    device, reason = dataset_device(tmp_path / "ds", "cuda:0")
    assert device == torch.device("cuda:0") and "copied" in reason
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (2 * need, 10**12))
    device, reason = dataset_device(tmp_path / "ds", "cuda:0")
    assert device == torch.device("cpu") and "exceeds half" in reason
