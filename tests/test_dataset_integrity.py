"""Damaged datasets are refused, killed or failed writes leave nothing behind, a full disk is one line."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from taco_rl.runners.cli import main
from taco_rl.runners.data import datasets
from taco_rl.runners.data.datasets import DatasetError, DatasetWriter, dataset_info, load_dataset, write_dataset

sys.path.insert(0, str(Path(__file__).parent))
from test_datasets import make_episodes, replay_of  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def _dataset(tmp_path: Path, name: str = "ds", lengths=(5, 9, 4, 12)) -> Path:
    out = tmp_path / name
    write_dataset(replay_of(make_episodes(list(lengths))), out, task="point_reach", source={"kind": "test"})
    return out


def _frames(ds: Path) -> Path:
    return next(ds.glob("storage-*")) / "frames.memmap"


def _flip_two_bytes(file: Path, keep_times: bool = False) -> None:
    st = file.stat()
    data = bytearray(file.read_bytes())
    data[3] ^= 0x01
    data[-7] ^= 0x80
    file.write_bytes(bytes(data))
    if keep_times:
        os.utime(file, ns=(st.st_atime_ns, st.st_mtime_ns))


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("taco: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# ---------------------------------------------------------------------------- 1. damaged datasets
def test_truncated_file_is_refused_by_info_and_load(tmp_path, capsys):
    ds = _dataset(tmp_path)
    frames = _frames(ds)
    with open(frames, "r+b") as fh:
        fh.truncate(frames.stat().st_size - 100)
    assert main(["data", "info", str(ds)]) == 2  # without verify=true
    line = _one_line_error(capsys)
    assert "frames.memmap" in line and "bytes" in line and "re-create or re-import" in line
    with pytest.raises(DatasetError, match="frames.memmap"):
        load_dataset(ds, nstep=1)
    frames.unlink()
    with pytest.raises(DatasetError, match="frames.memmap: missing"):
        dataset_info(ds)


@pytest.mark.parametrize("key", ["frames", "actions", "rewards", "discounts", "ep_start"])
@pytest.mark.parametrize("change", [-1, 1, 4096])
def test_an_array_file_of_another_size_is_refused(tmp_path, capsys, key, change):
    """Any array file shorter or LONGER than dataset.json implies is refused on every open: the checksum
    covers only the bytes dataset.json names, so bytes appended to a file would otherwise pass it."""
    ds = _dataset(tmp_path)
    file = next(ds.glob("storage-*")) / f"{key}.memmap"
    want = datasets.expected_file_sizes(dataset_info(ds))[key]
    assert file.stat().st_size == want
    with open(file, "r+b") as fh:
        fh.truncate(want + change)  # longer: zero bytes appended
    assert main(["data", "info", str(ds)]) == 2
    line = _one_line_error(capsys)
    assert f"{key}.memmap: {want + change} bytes, dataset.json's slots and shapes need {want}" in line
    for opens in (dataset_info, datasets.verify_checksum, lambda p: load_dataset(p, nstep=1)):
        with pytest.raises(DatasetError, match=rf"{key}\.memmap: {want + change} bytes"):
            opens(ds)


def test_flipped_bytes_are_refused_before_training(tmp_path, capsys):
    ds = _dataset(tmp_path)
    assert main(["data", "info", str(ds)]) == 0
    assert "(verified)" in capsys.readouterr().out  # the writer hashed what it wrote
    _flip_two_bytes(_frames(ds))
    assert main(["data", "info", str(ds)]) == 0  # info alone does not hash: it says so
    assert "not verified yet" in capsys.readouterr().out
    with pytest.raises(DatasetError, match="checksum mismatch"):
        load_dataset(ds, nstep=1)
    code = main(
        [
            "offline",
            f"dataset={ds}",
            "task=point_reach",
            "agent=bc",
            f"root={tmp_path / 'runs'}",
            "image_size=16",
            "--no-progress",
        ]
    )
    assert code == 2 and "checksum mismatch" in _one_line_error(capsys)
    assert main(["data", "info", str(ds), "verify=true"]) == 2
    assert "checksum mismatch" in _one_line_error(capsys)


def test_flip_with_restored_mtime_is_still_caught(tmp_path):
    ds = _dataset(tmp_path)
    load_dataset(ds, nstep=1)
    _flip_two_bytes(_frames(ds), keep_times=True)  # size and mtime as before; the ctime moved
    with pytest.raises(DatasetError, match="checksum mismatch"):
        load_dataset(ds, nstep=1)


def test_checksum_is_computed_once_per_version_of_the_files(tmp_path, monkeypatch, capsys):
    ds = _dataset(tmp_path)
    (ds / datasets.VERIFIED_FILE).unlink()  # as a dataset copied from elsewhere
    calls = []
    real = datasets._file_checksum
    monkeypatch.setattr(datasets, "_file_checksum", lambda *a: calls.append(1) or real(*a))
    load_dataset(ds, nstep=1)
    assert len(calls) == 1 and "verifying the checksum" in capsys.readouterr().err
    load_dataset(ds, nstep=1)
    load_dataset(ds, nstep=1)
    assert len(calls) == 1  # unchanged files: sizes and times only
    os.utime(_frames(ds))  # touched: hashed again
    load_dataset(ds, nstep=1)
    assert len(calls) == 2


# ---------------------------------------------------------------------------- 2. partial folders
_WRITER = """
import sys, time
from taco_rl.runners.data.datasets import DatasetWriter
import numpy as np
w = DatasetWriter(sys.argv[1], 100, (3, 8, 8), 2)
w.add_episode(np.zeros((6, 3, 8, 8), np.uint8), np.zeros((5, 2), np.float32), np.zeros(5, np.float32),
              np.ones(5, np.float32))
print("writing", flush=True)
time.sleep(60)
"""


def _partials(tmp_path: Path, name: str) -> list[Path]:
    return sorted(tmp_path.glob(f".{name}.partial-*"))


def test_killed_write_is_cleaned_by_the_next_write_of_that_name(tmp_path, capsys):
    out = tmp_path / "ds"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen([sys.executable, "-c", _WRITER, str(out)], stdout=subprocess.PIPE, env=env, text=True)
    try:
        assert child.stdout.readline().strip() == "writing"
        live = _partials(tmp_path, "ds")
        assert len(live) == 1
        assert datasets.remove_stale_partials(out) == [] and live[0].is_dir()  # a live writer's folder stays
        other = tmp_path / "other"
        _dataset(tmp_path, "other")
        assert live[0].is_dir()  # writing another name leaves it alone
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        child.kill()
        child.wait()
    assert _partials(tmp_path, "ds") == live  # kill -9: the folder outlives its writer
    capsys.readouterr()
    _dataset(tmp_path, "ds")
    err = capsys.readouterr().err
    assert _partials(tmp_path, "ds") == [] and f"removed {live[0]}" in err and "interrupted write" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds", "other"]
    assert not (other / datasets._PARTIAL_LOCK).exists() and not (out / datasets._PARTIAL_LOCK).exists()


def test_failed_write_removes_its_own_folder(tmp_path):
    eps = make_episodes([5, 4])
    with pytest.raises(DatasetError, match="more than the"), DatasetWriter(tmp_path / "ds", 8, (3, 8, 8), 2) as w:
        w.add_episode(*eps[0])
        w.add_episode(*eps[1])
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------- 3. full disk
def test_too_little_free_space_is_refused_before_writing(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "free_bytes", lambda folder: 10_000)
    with pytest.raises(DatasetError, match=r"needs about .* GB is free on that disk") as e:
        DatasetWriter(tmp_path / "ds", 10_000, (3, 8, 8), 2)
    assert "\n" not in str(e.value)
    assert list(tmp_path.iterdir()) == []


def test_free_space_check_counts_every_array(tmp_path, monkeypatch):
    """A write whose frames alone fit in the free space but whose actions, rewards, discounts and episode
    starts do not is refused before anything is written; one byte of margin more and it is not."""
    slots, frame_shape, action_dim = 100_000, (3, 4, 4), 6
    frames = slots * 3 * 4 * 4
    rest = slots * (action_dim * 4 + 4 + 4 + 8)  # float32 actions, rewards, discounts; int64 episode starts
    margin = 2**20
    monkeypatch.setattr(datasets, "free_bytes", lambda folder: frames + rest + margin - 1)
    with pytest.raises(DatasetError, match=r"needs about 0\.01 GB, 0\.01 GB is free"):
        DatasetWriter(tmp_path / "ds", slots, frame_shape, action_dim)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(datasets, "free_bytes", lambda folder: frames + rest + margin)
    writer = DatasetWriter(tmp_path / "ds", slots, frame_shape, action_dim)
    writer.abort()
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs (needs root and mount); skipped where it cannot be mounted."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (the free-space check is covered by patching)")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_disk_filling_up_mid_write_is_one_line_and_leaves_nothing(small_disk, monkeypatch):
    monkeypatch.setattr(datasets, "free_bytes", lambda folder: 1 << 40)  # another process filled it later
    big = np.zeros((201, 3, 84, 84), np.uint8)
    ep = (big, np.zeros((200, 2), np.float32), np.zeros(200, np.float32), np.ones(200, np.float32))
    with pytest.raises(DatasetError) as e, DatasetWriter(small_disk / "ds", 201 * 3, (3, 84, 84), 2) as w:
        for _ in range(3):
            w.add_episode(*ep)
    assert "disk is full" in str(e.value) and "\n" not in str(e.value) and e.value.__suppress_context__
    assert list(small_disk.iterdir()) == []


def test_cli_on_a_full_disk_is_one_line(small_disk, tmp_path):
    a, b = _dataset(tmp_path, "a", [200] * 4), _dataset(tmp_path, "b", [200] * 4)  # 2 x ~160 KB of frames
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * (900 << 10))
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "taco_rl.runners.cli",
            "data",
            "concat",
            str(a),
            str(b),
            f"out={small_disk / 'ab'}",
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.count("\n") == 1 and "cannot write dataset" in r.stderr and "is free" in r.stderr
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler"]


# ---------------------------------------------------------------------------- 4. two collects, one out=
def test_second_collect_into_the_same_out_stops_at_once_naming_the_holder(tmp_path, capsys):
    out = tmp_path / "pr"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MUJOCO_GL": "egl"}
    first = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "taco_rl.runners.cli",
            "data",
            "collect",
            "policy=random",
            "task=point_reach",
            "episodes=100000",
            f"out={out}",
            "--no-progress",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    work = tmp_path / ".pr.collecting"
    try:
        deadline = time.time() + 60
        while not (work / "episode_000000.npz").exists():
            assert first.poll() is None and time.time() < deadline, first.stderr.read() if first.poll() else "slow"
            time.sleep(0.05)
        t0 = time.time()
        assert (
            main(["data", "collect", "policy=random", "task=point_reach", "episodes=3", f"out={out}", "--no-progress"])
            == 2
        )
        assert time.time() - t0 < 10
        line = _one_line_error(capsys)
        assert "being collected by another process" in line and f"pid {first.pid}" in line
        assert first.poll() is None  # the holder is undisturbed
    finally:
        first.kill()
        first.wait()
    # the killed holder's lock went with it: the same command resumes its episodes and finishes
    assert (
        main(["data", "collect", "policy=random", "task=point_reach", "episodes=2", f"out={out}", "--no-progress"]) == 0
    )
    assert "resuming" in capsys.readouterr().out and not work.exists()


def test_refused_collect_leaves_no_folder(tmp_path, capsys):
    assert main(["data", "collect", "policy=random", "episodes=0", "task=point_reach", f"out={tmp_path / 'x'}"]) == 2
    capsys.readouterr()
    assert list(tmp_path.iterdir()) == []


class _FullDisk:
    """A file whose writes fail as on a full disk (where no small file system can be mounted)."""

    def __init__(self, fh):
        self.fh = fh

    def seek(self, *a):
        return self.fh.seek(*a)

    def write(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    def close(self):
        self.fh.close()


def test_late_enospc_is_one_line_without_a_small_disk(tmp_path):
    ep = make_episodes([5])[0]
    with pytest.raises(DatasetError) as e, DatasetWriter(tmp_path / "ds", 6, (3, 8, 8), 2) as w:
        w._files["rewards"] = _FullDisk(w._files["rewards"])
        w.add_episode(*ep)
    assert "disk is full" in str(e.value) and "\n" not in str(e.value)
    assert list(tmp_path.iterdir()) == []


def _vd4rl_npz(folder: Path, episodes: int = 30, steps: int = 100) -> Path:
    folder.mkdir(parents=True)
    g = np.random.default_rng(0)
    for i in range(episodes):
        first = np.zeros(steps + 1, bool)
        first[0] = True
        np.savez(
            folder / f"ep{i:03d}-{steps}.npz",
            image=g.integers(0, 256, (steps + 1, 64, 64, 3), dtype=np.uint8),
            action=g.uniform(-1, 1, (steps + 1, 6)).astype(np.float32),
            reward=np.ones(steps + 1, np.float32),
            is_first=first,
            is_terminal=np.zeros(steps + 1, bool),
        )
    return folder


@pytest.mark.slow  # two CLI start-ups: ~7-10 s on 2 busy cores
def test_killed_import_leaves_a_folder_the_next_import_removes(tmp_path):
    src, out = _vd4rl_npz(tmp_path / "src" / "walker_walk"), tmp_path / "ds"
    argv = [
        sys.executable,
        "-m",
        "taco_rl.runners.cli",
        "data",
        "import",
        "vd4rl",
        str(src),
        f"out={out}",
        "--no-progress",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while not any(any(p.glob("storage-*")) for p in _partials(tmp_path, "ds")):  # arrays being filled
            assert first.poll() is None and time.time() < deadline, "the import ended before it was killed"
            time.sleep(0.01)
        first.kill()
    finally:
        first.kill()
        first.wait()
    left = _partials(tmp_path, "ds")
    assert len(left) == 1 and not out.exists()
    r = subprocess.run(argv, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert f"removed {left[0]}" in r.stderr and _partials(tmp_path, "ds") == [] and dataset_info(out)["episodes"] == 30
