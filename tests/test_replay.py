"""Replay buffer against a slow, obviously-correct reference (SPEC section 2).

Frames are tiny (3x4x4) and encode (episode id, step) in their pixels, so a sampled stack can be
mapped back to the (episode, t) it was drawn for; every key is then compared with a plain Python walk
over the stored episodes.
"""

from __future__ import annotations

import json
import os
from collections import Counter

import numpy as np
import pytest
import torch

from taco_rl.runners.core.replay import Replay, ReplayFormatError

FRAME = (3, 4, 4)
A = 2
S = 3
GAMMA = 0.9


# ---------------------------------------------------------------------------------------------
# data and the brute-force reference
# ---------------------------------------------------------------------------------------------
def make_episode(rng: np.random.Generator, ep_id: int, steps: int, kind: str) -> dict:
    """One episode with ``steps`` transitions; pixels encode (ep_id, step)."""
    frames = np.zeros((steps + 1, *FRAME), dtype=np.uint8)
    idx = np.arange(steps + 1)
    frames[:, 0] = ep_id
    frames[:, 1] = (idx % 256)[:, None, None]
    frames[:, 2] = (idx // 256)[:, None, None]
    actions = rng.normal(size=(steps, A)).astype(np.float32)
    rewards = rng.normal(size=steps).astype(np.float32)
    if kind == "truncated":  # time limit: not a termination, discount stays 1
        discounts = np.ones(steps, dtype=np.float32)
    elif kind == "terminal":
        discounts = np.ones(steps, dtype=np.float32)
        if steps:
            discounts[-1] = 0.0
    else:  # arbitrary env discounts, to pin the product in the n-step target
        discounts = rng.uniform(0.3, 1.0, size=steps).astype(np.float32)
    return {"id": ep_id, "frames": frames, "actions": actions, "rewards": rewards, "discounts": discounts}


def decode(stack: np.ndarray) -> tuple[int, int]:
    """(episode id, step) of the last frame of a (3S, H, W) stack."""
    last = stack[-3:]
    return int(last[0, 0, 0]), int(last[1, 0, 0]) + 256 * int(last[2, 0, 0])


class Reference:
    """The stored data as a list of episodes, and what a sample of (episode, t) must contain."""

    def __init__(self, capacity: int, nstep: int, seq_len: int) -> None:
        self.capacity, self.n, self.k = capacity, nstep, seq_len
        self.episodes: list[dict] = []  # each with "start": global index of its first slot
        self.total = 0  # slots written so far

    def add_episode(self, ep: dict) -> None:
        self.episodes.append({**ep, "start": self.total})
        self.total += len(ep["frames"])

    def begin(self, ep: dict) -> None:
        """Start an episode whose steps are then revealed one by one with step()."""
        self.episodes.append({**ep, "start": self.total, "shown": 0})
        self.total += 1

    def step(self) -> None:
        self.episodes[-1]["shown"] += 1
        self.total += 1

    def _steps(self, ep: dict) -> int:
        return ep.get("shown", len(ep["frames"]) - 1)

    def by_id(self, ep_id: int) -> dict:
        (ep,) = [e for e in self.episodes if e["id"] == ep_id]
        return ep

    def valid(self) -> set[tuple[int, int]]:
        """Positions with max(n, K) steps left in their episode whose frames are all still held."""
        oldest_held = max(0, self.total - self.capacity)
        out = set()
        for ep in self.episodes:
            for t in range(self._steps(ep) + 1):
                if t + max(self.n, self.k) > self._steps(ep):
                    continue
                first_needed = ep["start"] + max(0, t - S + 1)
                if first_needed >= oldest_held:
                    out.add((ep["id"], t))
        return out

    def expected(self, ep_id: int, t: int) -> dict[str, np.ndarray]:
        ep = self.by_id(ep_id)
        f, a, r, d = ep["frames"], ep["actions"], ep["rewards"], ep["discounts"]

        def stack(end: int) -> np.ndarray:
            return np.concatenate([f[max(0, end - S + 1 + i)] for i in range(S)], axis=0)

        ret, disc = 0.0, 1.0
        for i in range(self.n):
            ret += disc * float(r[t + i])
            disc *= GAMMA * float(d[t + i])
        out = {
            "obs": stack(t),
            "action": a[t],
            "reward": np.array([ret]),
            "discount": np.array([disc]),
            "next_obs": stack(t + self.n),
        }
        if self.k > 0:
            out["action_seq"] = a[t : t + self.k]
            out["future_obs"] = stack(t + self.k)
        return out


def check_against_reference(rb: Replay, ref: Reference, draws_per_position: int = 30) -> None:
    """Every sample matches the reference, and the support is exactly the valid positions."""
    valid = ref.valid()
    assert rb.num_sampleable == len(valid)
    if not valid:
        with pytest.raises(RuntimeError, match="nothing to sample"):
            rb.sample(4)
        return
    counts: Counter = Counter()
    cache: dict = {}
    n_draws = draws_per_position * len(valid)
    while sum(counts.values()) < n_draws:
        batch = rb.sample(512)
        assert batch.batch_size == torch.Size([512])
        assert batch["obs"].dtype == torch.uint8 and batch["obs"].shape == (512, 3 * S, 4, 4)
        assert batch["reward"].shape == (512, 1) and batch["discount"].shape == (512, 1)
        np_batch = {k: v.cpu().numpy() for k, v in batch.items()}
        for i in range(512):
            key = decode(np_batch["obs"][i])
            assert key in valid, f"sampled (episode, t)={key} is not a valid position"
            if key not in cache:
                cache[key] = ref.expected(*key)
            exp = cache[key]
            for name in ("obs", "next_obs", "future_obs"):
                if name in exp:
                    np.testing.assert_array_equal(np_batch[name][i], exp[name], err_msg=f"{name} at {key}")
            for name in ("action", "action_seq"):
                if name in exp:
                    np.testing.assert_array_equal(np_batch[name][i], exp[name], err_msg=f"{name} at {key}")
            for name in ("reward", "discount"):
                np.testing.assert_allclose(
                    np_batch[name][i], exp[name], rtol=1e-5, atol=1e-6, err_msg=f"{name} at {key}"
                )
            counts[key] += 1
    assert set(counts) == valid, f"never sampled: {sorted(valid - set(counts))[:10]}"
    # Uniform support: every count is within 6 sigma of its binomial mean (a loose, non-flaky bound
    # that still catches positions drawn twice as often, or half as often, as the others).
    total = sum(counts.values())
    p = 1.0 / len(valid)
    mean, sigma = total * p, (total * p * (1 - p)) ** 0.5
    assert all(abs(c - mean) <= 6 * sigma for c in counts.values())


def fill(rb: Replay, ref: Reference, rng: np.random.Generator, lengths: list[int], first_id: int = 1) -> int:
    """Add episodes of the given lengths, alternating add_episode() and step-by-step add()."""
    kinds = ("truncated", "terminal", "random")
    for i, steps in enumerate(lengths):
        ep = make_episode(rng, first_id + i, steps, kinds[i % 3])
        if i % 2 == 0:
            rb.add_episode(ep["frames"], ep["actions"], ep["rewards"], ep["discounts"])
            ref.add_episode(ep)
        else:
            add_stepwise(rb, ep)
            ref.add_episode(ep)
    return first_id + len(lengths)


def add_stepwise(rb: Replay, ep: dict) -> None:
    rb.add(ep["frames"][0], first=True)
    for t in range(len(ep["actions"])):
        rb.add(ep["frames"][t + 1], ep["actions"][t], float(ep["rewards"][t]), float(ep["discounts"][t]))


LENGTHS = [0, 1, 2, 3, 4, 5, 6, 7, 9, 12, 17, 25, 2, 30, 1, 8]


# ---------------------------------------------------------------------------------------------
# semantics
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("nstep", [1, 3, 5])
@pytest.mark.parametrize("seq_len", [1, 3, 5])
def test_samples_match_reference(nstep: int, seq_len: int) -> None:
    rng = np.random.default_rng(nstep * 10 + seq_len)
    torch.manual_seed(0)
    rb = Replay(1000, FRAME, A, frame_stack=S, nstep=nstep, gamma=GAMMA, seq_len=seq_len)
    ref = Reference(1000, nstep, seq_len)
    fill(rb, ref, rng, LENGTHS)
    assert len(rb) == ref.total
    check_against_reference(rb, ref)


def test_without_sequence_keys() -> None:
    rng = np.random.default_rng(1)
    rb = Replay(500, FRAME, A, frame_stack=S, nstep=3, gamma=GAMMA, seq_len=0)
    ref = Reference(500, 3, 0)
    fill(rb, ref, rng, LENGTHS)
    assert set(rb.sample(8).keys()) == {"obs", "action", "reward", "discount", "next_obs"}
    check_against_reference(rb, ref)


def test_terminal_and_truncated_targets() -> None:
    """Pin the n-step target at the end of a terminal and of a truncated episode."""
    rng = np.random.default_rng(2)
    ref = Reference(100, 3, 0)
    for ep_id, kind in ((1, "terminal"), (2, "truncated")):
        ep = make_episode(rng, ep_id, 5, kind)
        ref.add_episode(ep)
        last = ref.expected(ep_id, 2)  # uses steps 2, 3, 4: the last one is the terminal
        r = ep["rewards"]
        want = r[2] + GAMMA * r[3] + GAMMA**2 * r[4]
        np.testing.assert_allclose(last["reward"], [want], rtol=1e-6)
        np.testing.assert_allclose(last["discount"], [0.0 if kind == "terminal" else GAMMA**3], atol=1e-9)


def test_support_while_episode_grows() -> None:
    """Sampleable positions appear exactly when max(n, K) steps exist after them."""
    rng = np.random.default_rng(3)
    rb = Replay(1000, FRAME, A, frame_stack=S, nstep=3, gamma=GAMMA, seq_len=5)
    ref = Reference(1000, 3, 5)
    ep = make_episode(rng, 1, 9, "terminal")
    rb.add(ep["frames"][0], first=True)
    ref.begin(ep)
    for t in range(9):
        rb.add(ep["frames"][t + 1], ep["actions"][t], float(ep["rewards"][t]), float(ep["discounts"][t]))
        ref.step()
        assert rb.num_sampleable == len(ref.valid()) == max(0, t + 1 - 5 + 1)
    check_against_reference(rb, ref)


# ---------------------------------------------------------------------------------------------
# ring wrap-around
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("nstep", "seq_len"), [(3, 3), (1, 5), (5, 1)])
def test_wraparound(nstep: int, seq_len: int) -> None:
    rng = np.random.default_rng(nstep + 7 * seq_len)
    cap = 37
    rb = Replay(cap, FRAME, A, frame_stack=S, nstep=nstep, gamma=GAMMA, seq_len=seq_len)
    ref = Reference(cap, nstep, seq_len)
    next_id = fill(rb, ref, rng, [10, 4, 15, 0, 8])
    assert ref.total > cap and len(rb) == cap
    check_against_reference(rb, ref, draws_per_position=20)
    # An episode longer than the whole ring, added in one call and step by step.
    next_id = fill(rb, ref, rng, [50, 45], first_id=next_id)
    check_against_reference(rb, ref, draws_per_position=20)
    # Check while an episode is in progress, at several points of the overwrite.
    ep = make_episode(rng, next_id, 20, "random")
    rb.add(ep["frames"][0], first=True)
    ref.begin(ep)
    for t in range(20):
        rb.add(ep["frames"][t + 1], ep["actions"][t], float(ep["rewards"][t]), float(ep["discounts"][t]))
        ref.step()
        if t % 4 == 3:
            assert rb.num_sampleable == len(ref.valid())
    check_against_reference(rb, ref, draws_per_position=20)


def test_add_and_add_episode_give_identical_storage() -> None:
    rng = np.random.default_rng(4)
    episodes = [
        make_episode(rng, i + 1, n, ("truncated", "terminal", "random")[i % 3]) for i, n in enumerate([5, 0, 12, 30, 3])
    ]
    a = Replay(23, FRAME, A, frame_stack=S, nstep=3, gamma=GAMMA, seq_len=3)
    b = Replay(23, FRAME, A, frame_stack=S, nstep=3, gamma=GAMMA, seq_len=3)
    for ep in episodes:
        a.add_episode(ep["frames"], ep["actions"], ep["rewards"], ep["discounts"])
        add_stepwise(b, ep)
        for key, x in a._slot_tensors().items():  # rows never written hold no data (frames are not zeroed)
            assert torch.equal(x[: len(a)], b._slot_tensors()[key][: len(a)]), key
        assert (len(a), a.num_sampleable, a._next, a._episode_start) == (
            len(b),
            b.num_sampleable,
            b._next,
            b._episode_start,
        )


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_storage_and_sampling(tmp_path) -> None:
    rng = np.random.default_rng(9)
    rb = Replay(37, FRAME, A, frame_stack=S, nstep=3, gamma=GAMMA, seq_len=3, device="cuda")
    ref = Reference(37, 3, 3)
    fill(rb, ref, rng, [10, 4, 15, 0, 8, 2, 9])
    batch = rb.sample(16)
    assert all(v.device.type == "cuda" for v in batch.values())
    check_against_reference(rb, ref, draws_per_position=10)
    rb.save(tmp_path / "r")
    for device in ("cuda", "cpu"):
        loaded = Replay.load(tmp_path / "r", device=device)
        for key, x in rb._slot_tensors().items():
            assert torch.equal(x.cpu(), loaded._slot_tensors()[key].cpu()), key
        check_against_reference(loaded, ref, draws_per_position=10)


def test_add_accepts_tensors_and_numpy() -> None:
    rb = Replay(10, FRAME, A, nstep=1)
    rb.add(torch.zeros(FRAME, dtype=torch.uint8), first=True)
    rb.add(np.ones(FRAME, dtype=np.uint8), torch.tensor([0.5, -0.5]), 1.0, 1.0)
    rb.add(torch.ones(FRAME, dtype=torch.uint8), [0.25, 0.75], 2.0, 0.0)
    assert len(rb) == 3 and rb.num_sampleable == 2
    torch.testing.assert_close(rb._actions[2], torch.tensor([0.25, 0.75]))


# ---------------------------------------------------------------------------------------------
# RNG, persistence
# ---------------------------------------------------------------------------------------------
def assert_same_batch(x, y) -> None:
    assert set(x.keys()) == set(y.keys())
    for key in x.keys():
        assert torch.equal(x[key], y[key]), key


def small_replay(rng: np.random.Generator, cap: int = 41) -> tuple[Replay, list[dict]]:
    rb = Replay(cap, FRAME, A, frame_stack=S, nstep=3, gamma=GAMMA, seq_len=2)
    episodes = [
        make_episode(rng, i + 1, n, ("truncated", "terminal", "random")[i % 3]) for i, n in enumerate([12, 2, 20, 15])
    ]
    for ep in episodes:
        rb.add_episode(ep["frames"], ep["actions"], ep["rewards"], ep["discounts"])
    return rb, episodes


def test_sampling_uses_global_torch_rng() -> None:
    rb, _ = small_replay(np.random.default_rng(5))
    torch.manual_seed(123)
    state = torch.get_rng_state()
    x = rb.sample(64)
    torch.set_rng_state(state)
    assert_same_batch(x, rb.sample(64))


def test_save_load_round_trip(tmp_path) -> None:
    rng = np.random.default_rng(6)
    rb, _ = small_replay(rng)
    path = tmp_path / "replay"
    rb.save(path)
    assert not list(path.rglob("*.pt")) and not list(path.rglob("*.pkl"))
    loaded = Replay.load(path)
    assert (len(loaded), loaded.num_sampleable, loaded.capacity, loaded.gamma) == (
        len(rb),
        rb.num_sampleable,
        rb.capacity,
        rb.gamma,
    )
    for key, x in rb._slot_tensors().items():
        assert torch.equal(x, loaded._slot_tensors()[key]), key
    torch.manual_seed(7)
    x = rb.sample(128)
    torch.manual_seed(7)
    assert_same_batch(x, loaded.sample(128))

    # Adding continues exactly (mid-episode too) in both.
    more = [make_episode(rng, 10, 9, "terminal"), make_episode(rng, 11, 7, "random")]
    for r in (rb, loaded):
        r.add_episode(more[0]["frames"], more[0]["actions"], more[0]["rewards"], more[0]["discounts"])
        add_stepwise(r, more[1])
    torch.manual_seed(8)
    x = rb.sample(128)
    torch.manual_seed(8)
    assert_same_batch(x, loaded.sample(128))

    # Copy-on-write load: the files still hold the saved state.
    again = Replay.load(path)
    assert again.total_added == rb.total_added - (9 + 1) - (7 + 1)

    # Incremental save back into the same directory (the loaded replay's own source).
    storage_before = json.loads((path / "meta.json").read_text())["storage"]
    loaded.save(path)
    assert json.loads((path / "meta.json").read_text())["storage"] == storage_before
    reloaded = Replay.load(path)
    for key, x in rb._slot_tensors().items():
        assert torch.equal(x, reloaded._slot_tensors()[key]), key
    torch.manual_seed(9)
    x = rb.sample(128)
    torch.manual_seed(9)
    assert_same_batch(x, reloaded.sample(128))

    # The original saves over it: not its last save any more, so a full rewrite; old storage removed.
    rb.add_episode(more[0]["frames"], more[0]["actions"], more[0]["rewards"], more[0]["discounts"])
    rb.save(path)
    assert len(list(path.glob("storage-*"))) == 1
    assert json.loads((path / "meta.json").read_text())["storage"] != storage_before
    final = Replay.load(path)
    for key, x in rb._slot_tensors().items():
        assert torch.equal(x, final._slot_tensors()[key]), key
    assert final.num_sampleable == rb.num_sampleable
    # Repeated incremental saves from the same replay.
    rb.add_episode(more[1]["frames"], more[1]["actions"], more[1]["rewards"], more[1]["discounts"])
    rb.save(path)
    rb.add(more[1]["frames"][0], first=True)
    rb.save(path)
    final = Replay.load(path)
    for key, x in rb._slot_tensors().items():
        assert torch.equal(x, final._slot_tensors()[key]), key
    assert final._episode_start == rb._episode_start


def test_save_load_partly_filled(tmp_path) -> None:
    """A ring that has not wrapped yet: only written rows are copied, the rest reads back as before."""
    rng = np.random.default_rng(10)
    rb = Replay(100, FRAME, A, frame_stack=S, nstep=2, gamma=GAMMA, seq_len=0)
    ref = Reference(100, 2, 0)
    fill(rb, ref, rng, [7, 12, 3])
    rb.save(tmp_path / "r")
    loaded = Replay.load(tmp_path / "r")
    for key, x in rb._slot_tensors().items():  # rows never written hold no data (frames are not zeroed)
        assert torch.equal(x[: len(rb)], loaded._slot_tensors()[key][: len(rb)]), key
    check_against_reference(loaded, ref, draws_per_position=10)


def test_save_load_empty(tmp_path) -> None:
    rb = Replay(10, FRAME, A)
    rb.save(tmp_path / "r")
    loaded = Replay.load(tmp_path / "r")
    assert len(loaded) == 0 and loaded.num_sampleable == 0
    with pytest.raises(ValueError, match="first=True"):
        loaded.add(np.zeros(FRAME, np.uint8), np.zeros(A), 0.0, 1.0)


def test_load_errors(tmp_path) -> None:
    rb, _ = small_replay(np.random.default_rng(8))
    with pytest.raises(ReplayFormatError, match="no such replay directory"):
        Replay.load(tmp_path / "nowhere")

    def fresh(name: str):
        path = tmp_path / name
        rb._saved = {}
        rb.save(path)
        return path, json.loads((path / "meta.json").read_text())

    path, _ = fresh("missing_meta")
    os.remove(path / "meta.json")
    with pytest.raises(ReplayFormatError, match=r"meta\.json: missing"):
        Replay.load(path)

    path, _ = fresh("corrupt_meta")
    (path / "meta.json").write_text('{"format": "taco-rl-rep')
    with pytest.raises(ReplayFormatError, match=r"corrupt_meta.*meta\.json: corrupt"):
        Replay.load(path)

    path, meta = fresh("missing_field")
    del meta["capacity"]
    (path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ReplayFormatError, match=r"missing fields \['capacity'\]"):
        Replay.load(path)

    path, meta = fresh("wrong_capacity")
    meta["capacity"] += 1
    (path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ReplayFormatError, match="tensor 'frames' expected"):
        Replay.load(path)

    path, meta = fresh("interrupted")
    meta["complete"] = False
    (path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ReplayFormatError, match="interrupted"):
        Replay.load(path)

    path, meta = fresh("missing_tensor")
    (frames_file,) = (path / meta["storage"]).glob("frames*")
    os.remove(frames_file)
    with pytest.raises(ReplayFormatError, match=f"{meta['storage']}.*"):
        Replay.load(path)

    path, meta = fresh("missing_storage")
    import shutil

    shutil.rmtree(path / meta["storage"])
    with pytest.raises(ReplayFormatError, match="storage directory .* is missing"):
        Replay.load(path)


# ---------------------------------------------------------------------------------------------
# memory and input checks
# ---------------------------------------------------------------------------------------------
def test_bytes_per_transition() -> None:
    rb = Replay(100, (3, 84, 84), 6)
    assert rb.bytes_per_transition <= 21_500
    assert rb.bytes_per_transition >= 3 * 84 * 84  # it does count the frame


def test_bad_inputs() -> None:
    rb = Replay(20, FRAME, A, nstep=2)
    with pytest.raises(RuntimeError, match="nothing to sample"):
        rb.sample(4)
    with pytest.raises(ValueError, match="first=True"):
        rb.add(np.zeros(FRAME, np.uint8), np.zeros(A), 0.0, 1.0)
    with pytest.raises(ValueError, match=r"expected shape \(3, 4, 4\), got \(3, 4, 5\)"):
        rb.add(np.zeros((3, 4, 5), np.uint8), first=True)
    with pytest.raises(ValueError, match="expected dtype uint8, got torch.float32"):
        rb.add(np.zeros(FRAME, np.float32), first=True)
    rb.add(np.zeros(FRAME, np.uint8), first=True)
    with pytest.raises(ValueError, match="needs the action"):
        rb.add(np.zeros(FRAME, np.uint8))
    with pytest.raises(ValueError, match=r"action: expected shape \(2,\), got \(3,\)"):
        rb.add(np.zeros(FRAME, np.uint8), np.zeros(3), 0.0, 1.0)
    rb.add(np.zeros(FRAME, np.uint8), np.zeros(A), 0.0, 1.0)
    with pytest.raises(RuntimeError, match="nothing to sample"):  # one step: shorter than nstep
        rb.sample(4)
    frames = np.zeros((4, *FRAME), np.uint8)
    with pytest.raises(ValueError, match=r"actions: expected shape \(3, 2\), got \(2, 2\)"):
        rb.add_episode(frames, np.zeros((2, A)), np.zeros(3), np.ones(3))
    with pytest.raises(ValueError, match=r"discounts: expected shape \(3,\), got \(3, 1\)"):
        rb.add_episode(frames, np.zeros((3, A)), np.zeros(3), np.ones((3, 1)))
    with pytest.raises(ValueError, match=r"frames: expected shape \('T\+1', 3, 4, 4\)"):
        rb.add_episode(frames[0], np.zeros((3, A)), np.zeros(3), np.ones(3))
    with pytest.raises(ValueError, match="capacity"):
        Replay(3, FRAME, A, nstep=3)
    assert len(rb) == 2  # failed calls stored nothing


@pytest.mark.parametrize("nstep,seq_len", [(1, 0), (5, 3), (1, 1)])
def test_load_with_other_sampling_settings(tmp_path, nstep, seq_len) -> None:
    """A saved replay (an offline dataset) opened with another n-step and K samples by those settings,
    and never saves incrementally over the directory it came from."""
    rng = np.random.default_rng(12)
    rb = Replay(200, FRAME, A, frame_stack=S, nstep=3, gamma=GAMMA, seq_len=2)
    ref = Reference(200, nstep, seq_len)
    fill(rb, ref, rng, [9, 14, 6, 11])
    rb.save(tmp_path / "d")
    loaded = Replay.load(tmp_path / "d", nstep=nstep, seq_len=seq_len)
    assert (loaded.nstep, loaded.seq_len, loaded.frame_stack) == (nstep, seq_len, S)
    check_against_reference(loaded, ref, draws_per_position=10)
    meta_before = (tmp_path / "d" / "meta.json").read_text()
    loaded.save(tmp_path / "d")  # a full rewrite with the new settings, not a patch of the old meta
    meta = json.loads((tmp_path / "d" / "meta.json").read_text())
    assert meta["nstep"] == nstep and meta["storage"] != json.loads(meta_before)["storage"]
