"""Frame-once replay buffer with sample-time stacking (SPEC section 2).

Why this layout: a buffer that stores stacked observations (DrQ-v2 / TACO) keeps every frame
``frame_stack`` times for ``obs`` and again for ``next_obs``: 63.5 KB per transition at 84x84x3,
so 1M transitions need ~64 GB. Here every frame is stored exactly once (21,168 B at 84x84x3) and
stacks, n-step returns, discounts, action sequences and future frames are rebuilt at sample time
from index arithmetic, on the replay's device, with no per-sample Python loop.

Storage convention (dm_env style). Slot ``i`` (a global, monotonically increasing step counter;
storage row ``i % capacity``) holds frame ``s_i`` and the action ``a_{i-1}``, reward ``r_{i-1}``
and env discount ``d_{i-1}`` that led to it. The first slot of an episode holds the reset frame and
placeholders (zero action, reward 0, discount 1) that are never read. Episode boundaries are kept as
``ep_start`` (the global index of the episode's first slot) per slot, so nothing is ever read across
an episode end and a stack that reaches before an episode's first frame repeats that frame.

Truncation is not termination: an episode cut by a time limit keeps discount 1 on every step; only a
true terminal step has discount 0. The buffer never infers either; it stores what it is given.

Memory warning: ``capacity`` slots of ``frame_shape`` uint8 frames are reserved up front on
``device`` (1M slots at 84x84x3 is ~21 GB; 100k slots ~2.1 GB; on CPU the pages are committed as
the ring fills, on a GPU at once); see
``bytes_per_transition``. A replay opened with ``Replay.load(path, "cpu")`` maps its files instead and
only reads the pages it touches.

On CUDA, ``sample`` draws from the CUDA generator of that device (``torch.cuda.get_rng_state``), so
a checkpoint that must reproduce samples saves that state too.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import sys
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tensordict import TensorDict

__all__ = ["Replay", "ReplayFormatError"]

FORMAT_NAME = "taco-rl-replay"
FORMAT_VERSION = 1
META_FILE = "meta.json"

# Per-slot tensors that are persisted. ``sampleable`` is derived data: it is rebuilt on load.
_STORED_KEYS = ("frames", "actions", "rewards", "discounts", "ep_start")


class ReplayFormatError(ValueError):
    """A saved replay directory is missing, incomplete or does not match what is expected."""


# ---------------------------------------------------------------------------------------------
# Large CPU outputs: ask for transparent huge pages.
#
# A sampled batch of 1024 x 2 stacks x 3 frames at 84x84x3 is 130 MB of freshly allocated memory.
# With 4 KiB pages, first-touch page faults dominate the gather on CPU (measured on a 2-core VM:
# ~80 ms with fresh pages vs ~12 ms with MADV_HUGEPAGE). The hint is per allocation (no process-wide
# setting is changed) and best effort: anywhere it is not available it is simply skipped.
# ---------------------------------------------------------------------------------------------
_HUGE = 1 << 21
_MADV_HUGEPAGE = 14
_madvise: Any = None
if sys.platform.startswith("linux"):
    try:
        _libc = ctypes.CDLL(None, use_errno=True)
        _madvise = _libc.madvise
        _madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        _madvise.restype = ctypes.c_int
    except (OSError, AttributeError):  # pragma: no cover - platform dependent
        _madvise = None


def _empty_uint8(shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
    out = torch.empty(shape, dtype=torch.uint8, device=device)
    if _madvise is not None and device.type == "cpu" and out.numel() >= 4 * _HUGE:
        start = (out.data_ptr() + _HUGE - 1) & ~(_HUGE - 1)
        end = (out.data_ptr() + out.numel()) & ~(_HUGE - 1)
        if end > start:
            _madvise(start, end - start, _MADV_HUGEPAGE)  # failure only means slower first touch
    return out


def _as_tensor(x: Any, name: str, dtype: torch.dtype | None = None) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(x))
    try:
        return torch.as_tensor(np.asarray(x, dtype=None if dtype is None else np.float32))
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name}: cannot convert {type(x).__name__} to a tensor ({e})") from e


class Replay:
    """Ring buffer of single frames; stacks and n-step targets are built when sampling.

    Args:
        capacity: number of stored slots (frames); the oldest are overwritten when full.
        frame_shape: shape of one frame, ``(3, H, W)``; frames are uint8.
        action_dim: size of the (continuous) action vector.
        frame_stack: ``S``, frames concatenated on channels for ``obs``/``next_obs``/``future_obs``.
        nstep: ``n`` of the n-step return.
        gamma: discount factor of the n-step return.
        seq_len: ``K``; when > 0, samples also carry ``action_seq`` (K actions) and ``future_obs``
            (the stack ending K steps later), as TACO needs.
        device: where storage lives and sampling runs (the learner's device).

    A sampled index ``t`` has ``max(nstep, seq_len)`` steps left in its episode, and every frame it
    reads is still held by the ring.
    """

    def __init__(
        self,
        capacity: int,
        frame_shape: tuple[int, ...],
        action_dim: int,
        *,
        frame_stack: int = 3,
        nstep: int = 3,
        gamma: float = 0.99,
        seq_len: int = 0,
        device: str | torch.device = "cpu",
    ) -> None:
        self._configure(capacity, frame_shape, action_dim, frame_stack, nstep, gamma, seq_len, device)
        c, dev = self.capacity, self.device
        # Frames are >99% of the bytes and a row is only read after it is written, so they are left
        # uninitialised: on CPU the OS commits pages as the ring fills instead of all up front.
        self._frames = torch.empty((c, *self.frame_shape), dtype=torch.uint8, device=dev)
        self._actions = torch.zeros((c, self.action_dim), dtype=torch.float32, device=dev)
        self._rewards = torch.zeros((c,), dtype=torch.float32, device=dev)
        self._discounts = torch.ones((c,), dtype=torch.float32, device=dev)
        self._ep_start = torch.zeros((c,), dtype=torch.int64, device=dev)
        self._sampleable = torch.zeros((c,), dtype=torch.bool, device=dev)

    def _configure(
        self,
        capacity: int,
        frame_shape: tuple[int, ...],
        action_dim: int,
        frame_stack: int,
        nstep: int,
        gamma: float,
        seq_len: int,
        device: str | torch.device,
    ) -> None:
        """Validate settings, set counters and the index constants; allocates no storage."""
        frame_shape = tuple(int(s) for s in frame_shape)
        if len(frame_shape) != 3 or min(frame_shape) < 1:
            raise ValueError(f"frame_shape must be (C, H, W) with positive sizes, got {frame_shape}")
        if int(action_dim) < 1:
            raise ValueError(f"action_dim must be >= 1, got {action_dim}")
        if int(frame_stack) < 1 or int(nstep) < 1 or int(seq_len) < 0:
            raise ValueError(f"need frame_stack >= 1, nstep >= 1, seq_len >= 0; got {frame_stack}, {nstep}, {seq_len}")
        if not 0.0 <= float(gamma) <= 1.0:
            raise ValueError(f"gamma must be in [0, 1], got {gamma}")
        self.capacity = int(capacity)
        self.frame_shape: tuple[int, int, int] = frame_shape
        self.action_dim = int(action_dim)
        self.frame_stack = int(frame_stack)
        self.nstep = int(nstep)
        self.gamma = float(gamma)
        self.seq_len = int(seq_len)
        self.device = torch.device(device)
        # Steps an index needs after it in its own episode.
        self.horizon = max(self.nstep, self.seq_len)
        if self.capacity <= self.horizon:
            raise ValueError(
                f"capacity={self.capacity} cannot hold one sampleable index: it needs more than "
                f"max(nstep, seq_len)={self.horizon} slots"
            )
        self._setup_constants()
        self._next = 0  # global index of the next slot to write (= slots ever written)
        self._episode_start = -1  # global index of the current episode's first slot; -1: none yet
        self._valid: torch.Tensor | None = None  # cached storage rows of sampleable indices
        # (resolved path, save_id, _next at that save) of the last save/load, for incremental saves
        # per directory this replay saved to or was loaded from: (save_id, slots held by that save);
        # several are kept so a trainer can alternate between two checkpoint folders incrementally
        self._saved: dict[Path, tuple[str, int]] = {}

    def _setup_constants(self) -> None:
        dev, n = self.device, self.nstep
        # Stacks to gather, as offsets of their last frame from t; equal offsets share one gather.
        offsets = [0, n] + ([self.seq_len] if self.seq_len > 0 else [])
        self._stack_offsets = sorted(set(offsets))
        self._stack_of = {o: i for i, o in enumerate(self._stack_offsets)}
        offs = torch.tensor(self._stack_offsets, dtype=torch.int64, device=dev)
        back = torch.arange(self.frame_stack, dtype=torch.int64, device=dev) - (self.frame_stack - 1)
        self._frame_offsets = offs[:, None, None] + back[None, None, :]  # (U, 1, S)
        self._step_offsets = torch.arange(1, n + 1, dtype=torch.int64, device=dev)  # r_{t+i} in slot t+1+i
        self._seq_offsets = torch.arange(1, self.seq_len + 1, dtype=torch.int64, device=dev)
        self._gamma_pows = torch.tensor([self.gamma**i for i in range(n)], dtype=torch.float32, device=dev)

    # -----------------------------------------------------------------------------------------
    # sizes
    # -----------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return min(self._next, self.capacity)

    @property
    def total_added(self) -> int:
        """Slots ever added (the global slot counter); lets a checkpoint check that the replay it
        loads is the one its other state was saved with."""
        return self._next

    @property
    def num_sampleable(self) -> int:
        return int(self._valid_rows().numel())

    @property
    def bytes_per_transition(self) -> float:
        """Storage bytes per stored slot, counting every per-slot tensor (bookkeeping included)."""
        total = sum(t.element_size() * t.numel() for t in self._slot_tensors().values())
        return total / self.capacity

    def _slot_tensors(self) -> dict[str, torch.Tensor]:
        return {
            "frames": self._frames,
            "actions": self._actions,
            "rewards": self._rewards,
            "discounts": self._discounts,
            "ep_start": self._ep_start,
            "sampleable": self._sampleable,
        }

    def __repr__(self) -> str:
        return (
            f"Replay(len={len(self)}/{self.capacity}, sampleable={self.num_sampleable}, "
            f"frame_shape={self.frame_shape}, action_dim={self.action_dim}, frame_stack={self.frame_stack}, "
            f"nstep={self.nstep}, gamma={self.gamma}, seq_len={self.seq_len}, device={self.device})"
        )

    # -----------------------------------------------------------------------------------------
    # adding
    # -----------------------------------------------------------------------------------------
    def _check_frames(self, frames: Any, batched: bool) -> torch.Tensor:
        what = "frames" if batched else "frame"
        t = _as_tensor(frames, what)
        expected = ("T+1", *self.frame_shape) if batched else self.frame_shape
        got_shape = tuple(t.shape[1:]) if batched else tuple(t.shape)
        if (batched and t.dim() != 4) or got_shape != self.frame_shape:
            raise ValueError(f"{what}: expected shape {expected}, got {tuple(t.shape)}")
        if t.dtype != torch.uint8:
            raise ValueError(f"{what}: expected dtype uint8, got {t.dtype}")
        return t

    def add(
        self,
        frame: Any,
        action: Any = None,
        reward: float = 0.0,
        discount: float = 1.0,
        first: bool = False,
    ) -> None:
        """Store one frame.

        ``first=True`` starts a new episode with its reset frame (``action``, ``reward`` and
        ``discount`` are ignored). Otherwise ``frame`` is the observation reached by taking ``action``,
        which earned ``reward`` with env discount ``discount`` (0 only at a true terminal).
        """
        f = self._check_frames(frame, batched=False)
        if first:
            act = torch.zeros((1, self.action_dim), dtype=torch.float32)
            rew, disc = 0.0, 1.0
            ep = self._next
        else:
            if self._episode_start < 0:
                raise ValueError("the first add() must start an episode: pass first=True with the reset frame")
            if action is None:
                raise ValueError("add(first=False) needs the action that led to this frame")
            act = _as_tensor(action, "action", torch.float32)
            if act.numel() != self.action_dim or act.dim() > 1:
                raise ValueError(f"action: expected shape ({self.action_dim},), got {tuple(act.shape)}")
            act = act.reshape(1, self.action_dim)
            rew, disc = float(reward), float(discount)
            ep = self._episode_start
        self._append(
            f.unsqueeze(0),
            act,
            torch.tensor([rew], dtype=torch.float32),
            torch.tensor([disc], dtype=torch.float32),
            ep,
        )

    def add_episode(self, frames: Any, actions: Any, rewards: Any, discounts: Any) -> None:
        """Store a whole episode at once: ``frames`` (T+1, 3, H, W) uint8 starting with the reset
        frame, ``actions`` (T, A), ``rewards`` (T,), ``discounts`` (T,) (env discounts; 0 only at a
        true terminal). Equivalent to ``add(frames[0], first=True)`` followed by T ``add`` calls."""
        f = self._check_frames(frames, batched=True)
        t_steps = f.shape[0] - 1
        if t_steps < 0:
            raise ValueError("frames: expected at least the reset frame, got 0 frames")
        act = _as_tensor(actions, "actions", torch.float32)
        if act.dim() == 1 and t_steps == 0 and act.numel() == 0:
            act = act.reshape(0, self.action_dim)
        if tuple(act.shape) != (t_steps, self.action_dim):
            raise ValueError(f"actions: expected shape ({t_steps}, {self.action_dim}), got {tuple(act.shape)}")
        rew = _as_tensor(rewards, "rewards", torch.float32)
        disc = _as_tensor(discounts, "discounts", torch.float32)
        for name, x in (("rewards", rew), ("discounts", disc)):
            if tuple(x.shape) != (t_steps,):
                raise ValueError(f"{name}: expected shape ({t_steps},), got {tuple(x.shape)}")
        dev = act.device
        act = torch.cat([torch.zeros((1, self.action_dim), dtype=torch.float32, device=dev), act.float()])
        rew = torch.cat([torch.zeros(1, dtype=torch.float32, device=rew.device), rew.float()])
        disc = torch.cat([torch.ones(1, dtype=torch.float32, device=disc.device), disc.float()])
        self._append(f, act, rew, disc, self._next)

    def _append(
        self, frames: torch.Tensor, actions: torch.Tensor, rewards: torch.Tensor, discounts: torch.Tensor, ep: int
    ) -> None:
        """Write len(frames) consecutive slots of episode ``ep`` and update the sampleable mask."""
        a, count = self._next, frames.shape[0]
        skip = max(0, count - self.capacity)  # an episode longer than the ring keeps its tail
        a_w = a + skip
        for src, dst in (
            (frames, self._frames),
            (actions, self._actions),
            (rewards, self._rewards),
            (discounts, self._discounts),
            (ep, self._ep_start),
        ):
            self._write_range(dst, a_w, count - skip, src if isinstance(src, int) else src[skip:])
        self._next = a + count
        self._episode_start = ep
        self._valid = None
        # Validity can change for: the new slots and the `horizon` indices before them (their window
        # now ends inside the ring), and the first frame_stack-1 indices still held (their stacks may
        # reach frames that were just overwritten).
        lo = max(0, self._next - self.capacity)
        r1 = (max(lo, a - self.horizon), self._next)
        r2 = (lo, min(lo + self.frame_stack - 1, r1[0]))
        for start, stop in (r2, r1):
            if stop > start:
                self._refresh(start, stop)

    def _write_range(self, dst: torch.Tensor, start: int, count: int, src: torch.Tensor | int) -> None:
        """dst[g % capacity] = src for the consecutive global slots g = start .. start+count-1
        (``src`` is ``count`` rows, or one int written to every slot)."""
        c = self.capacity
        s0 = start % c
        first = min(count, c - s0)
        for d_lo, s_lo, n in ((s0, 0, first), (0, first, count - first)):
            if n <= 0:
                continue
            if isinstance(src, int):
                dst[d_lo : d_lo + n] = src
            else:
                dst[d_lo : d_lo + n].copy_(src[s_lo : s_lo + n], non_blocking=False)

    def _refresh(self, start: int, stop: int) -> None:
        """Recompute sampleable[g] for global indices g in [start, stop), all currently held."""
        c, dev = self.capacity, self.device
        g = torch.arange(start, stop, dtype=torch.int64, device=dev)
        rows = g % c
        ep = self._ep_start.index_select(0, rows)
        end = g + self.horizon
        ok = end < self._next
        ok &= self._ep_start.index_select(0, end.clamp(max=self._next - 1) % c) == ep
        # The oldest frame any stack of g reads (stacks clamp at the episode's first frame).
        oldest = torch.maximum(ep, g - (self.frame_stack - 1))
        ok &= oldest >= self._next - c
        self._sampleable.index_copy_(0, rows, ok)

    # -----------------------------------------------------------------------------------------
    # sampling
    # -----------------------------------------------------------------------------------------
    def _valid_rows(self) -> torch.Tensor:
        if self._valid is None:
            if self.device.type == "cpu":
                # numpy's serial scan: ~4x faster than torch.nonzero here, and never waits on threads.
                self._valid = torch.from_numpy(np.flatnonzero(self._sampleable.numpy()))
            else:
                self._valid = self._sampleable.nonzero().squeeze(1)
        return self._valid

    def sample(self, batch_size: int) -> TensorDict:
        """Sample ``batch_size`` indices uniformly (with replacement) over sampleable positions.

        Returns a TensorDict on ``self.device`` with ``obs``/``next_obs`` (B, 3S, H, W) uint8,
        ``action`` (B, A), ``reward`` (B, 1), ``discount`` (B, 1) float32, and when ``seq_len > 0``
        ``action_seq`` (B, K, A) and ``future_obs`` (B, 3S, H, W). When ``nstep == seq_len`` the
        ``next_obs`` and ``future_obs`` entries are the same tensor (they are the same frames);
        treat batches as read-only inputs. Draws from the global torch RNG, so restoring torch's RNG
        state reproduces the samples.
        """
        valid = self._valid_rows()
        if valid.numel() == 0:
            raise RuntimeError(
                f"Replay has nothing to sample: {len(self)} slots stored, but no position has "
                f"max(nstep, seq_len)={self.horizon} steps left in its episode yet"
            )
        b, c, dev = int(batch_size), self.capacity, self.device
        if b < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        # index_select rather than advanced indexing throughout: on a busy CPU, aten::index opens a
        # parallel region even for a few thousand elements, and waiting on a descheduled worker thread
        # cost ~15 ms per call in measurements; index_select stays serial at these sizes.
        rows = valid.index_select(0, torch.randint(valid.numel(), (b,), device=dev))
        lo = max(0, self._next - c)
        g = lo + (rows - lo) % c  # global index of each sampled row
        ep = self._ep_start.index_select(0, rows)

        # All stacks in one gather, laid out (stack, batch, frame) so each key is contiguous.
        u, s = len(self._stack_offsets), self.frame_stack
        fidx = (g[None, :, None] + self._frame_offsets).maximum(ep[None, :, None]) % c  # (U, B, S)
        buf = _empty_uint8((u * b * s, *self.frame_shape), dev)
        torch.index_select(self._frames, 0, fidx.reshape(-1), out=buf)
        stacks = buf.view(u, b, s * self.frame_shape[0], *self.frame_shape[1:])

        n = self.nstep
        ridx = ((g[:, None] + self._step_offsets) % c).reshape(-1)  # r_{t+i}, d_{t+i} in slot t+1+i
        r = self._rewards.index_select(0, ridx).view(b, n)
        d = self._discounts.index_select(0, ridx).view(b, n)
        dprod = torch.cumprod(d, dim=1)
        before = torch.cat([torch.ones_like(dprod[:, :1]), dprod[:, :-1]], dim=1)  # prod_{j<i} d_{t+j}
        reward = (self._gamma_pows * before * r).sum(dim=1, keepdim=True)
        discount = (self.gamma**n) * dprod[:, -1:]

        out = {
            "obs": stacks[0],
            "action": self._actions.index_select(0, (g + 1) % c),
            "reward": reward,
            "discount": discount,
            "next_obs": stacks[self._stack_of[n]],
        }
        if self.seq_len > 0:
            aidx = ((g[:, None] + self._seq_offsets) % c).reshape(-1)
            out["action_seq"] = self._actions.index_select(0, aidx).view(b, self.seq_len, self.action_dim)
            out["future_obs"] = stacks[self._stack_of[self.seq_len]]
        return TensorDict(out, batch_size=[b], device=dev)

    # -----------------------------------------------------------------------------------------
    # persistence
    # -----------------------------------------------------------------------------------------
    def _meta(self, storage: str, save_id: str, complete: bool) -> dict[str, Any]:
        return {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "capacity": self.capacity,
            "frame_shape": list(self.frame_shape),
            "action_dim": self.action_dim,
            "frame_stack": self.frame_stack,
            "nstep": self.nstep,
            "gamma": self.gamma,
            "seq_len": self.seq_len,
            "next": self._next,
            "episode_start": self._episode_start,
            "storage": storage,
            "save_id": save_id,
            "complete": complete,
        }

    @staticmethod
    def _write_meta(path: Path, meta: dict[str, Any]) -> None:
        tmp = path / f".{META_FILE}.{uuid.uuid4().hex}.tmp"
        with open(tmp, "w") as fh:
            json.dump(meta, fh, indent=1)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path / META_FILE)

    def save(self, path: str | os.PathLike) -> None:
        """Write the replay to directory ``path`` (created if needed).

        Layout: ``meta.json`` (sizes, hyper-parameters, counters) and ``storage-<id>/``, a tensordict
        memory-mapped directory of the per-slot tensors. Saving again to the path this replay last
        saved to or loaded from only writes the slots added since then. A full save writes a new
        storage directory and switches ``meta.json`` to it atomically, so an interrupted full save
        leaves the previous save intact. An interrupted incremental save is detected on load
        (``complete: false``) rather than silently read.

        Caveat: another Replay that has ``path`` open without a copy (``load(path, "cpu")``) sees the
        slots an incremental save rewrites; do not save into a directory another process is reading.
        """
        path = Path(path).resolve()
        path.mkdir(parents=True, exist_ok=True)
        meta = self._read_meta_if_ours(path)
        save_id = uuid.uuid4().hex
        if meta is not None:
            self._save_incremental(path, meta, save_id)
        else:
            storage = f"storage-{save_id}"
            slots = self._slot_tensors()
            # Sparse files: rows never written (a ring that is not full yet) cost no disk and are
            # not copied; frames are >99% of the bytes, so only their written rows are copied.
            td = TensorDict({k: slots[k] for k in _STORED_KEYS}, batch_size=[self.capacity])
            files = td.memmap_like(path / storage)
            held = len(self)  # rows 0..held-1 are the ones ever written
            for k in _STORED_KEYS:
                rows = held if k == "frames" else self.capacity
                files[k][:rows].copy_(slots[k][:rows])
            del files
            self._write_meta(path, self._meta(storage, save_id, True))
            for old in path.glob("storage-*"):
                if old.name != storage and old.is_dir():
                    shutil.rmtree(old, ignore_errors=True)
        self._saved[path] = (save_id, self._next)

    def _read_meta_if_ours(self, path: Path) -> dict[str, Any] | None:
        """meta.json of ``path`` if it is this replay's last save (so an incremental save is valid)."""
        if path not in self._saved:
            return None
        try:
            with open(path / META_FILE) as fh:
                meta = json.load(fh)
        except (OSError, ValueError):
            return None
        if (
            meta.get("save_id") != self._saved[path][0]
            or meta.get("next") != self._saved[path][1]
            or meta.get("complete") is not True
            or not (path / str(meta.get("storage"))).is_dir()
        ):
            return None
        return meta

    def _save_incremental(self, path: Path, meta: dict[str, Any], save_id: str) -> None:
        storage = meta["storage"]
        self._write_meta(path, {**meta, "complete": False})
        td = TensorDict.load_memmap(path / storage, mode="r+", allow_pickle=False)
        start = max(self._saved[path][1], self._next - self.capacity)
        stop = self._next
        if stop > start:
            rows = torch.arange(start, stop, device=self.device) % self.capacity
            for k in _STORED_KEYS:
                src = self._slot_tensors()[k]
                dst = td[k]
                dst[rows.cpu()] = src[rows].cpu()
        del td
        self._write_meta(path, self._meta(storage, save_id, True))

    def bytes_to_save(self, path: str | os.PathLike) -> int:
        """Disk space a `save(path)` needs beyond what `path` holds now: an incremental save fills
        the rows added since the last save there; a full save writes a whole new storage (the
        frames held, every row of the small tensors) before it drops the old one."""
        path = Path(path).resolve()
        frame_row = int(np.prod(self.frame_shape))
        other_row = sum(
            t.element_size() * t[0].numel()
            for k, t in self._slot_tensors().items()
            if k in _STORED_KEYS and k != "frames"
        )
        if self._read_meta_if_ours(path) is not None:
            new_rows = min(self._next - self._saved[path][1], self.capacity)
            return int(new_rows * (frame_row + other_row))
        return int(len(self) * frame_row + self.capacity * other_row)

    def detach_files(self) -> None:
        """Copy storage mapped from a saved directory into memory, so that later writes to those
        files (by whoever owns them) are never seen here; saves then never go back into them."""
        for key in _STORED_KEYS:
            t = getattr(self, f"_{key}")
            if t.device.type == "cpu":
                setattr(self, f"_{key}", t.clone())
        self._saved = {}

    @classmethod
    def load(
        cls,
        path: str | os.PathLike,
        device: str | torch.device = "cpu",
        *,
        frame_stack: int | None = None,
        nstep: int | None = None,
        gamma: float | None = None,
        seq_len: int | None = None,
    ) -> Replay:
        """Open a directory written by :meth:`save`; sampling and adding continue exactly.

        On CPU the storage is mapped copy-on-write (no copy; pages load lazily and new writes stay
        in memory, never in the files). On another device it is copied there.

        ``frame_stack``, ``nstep``, ``gamma`` and ``seq_len`` default to the saved settings; any of
        them may be changed, since stacks, returns and sequences are built at sample time (an offline
        learner reads a dataset with its own n-step and K). A replay opened with other settings
        never saves incrementally into ``path``.
        """
        path = Path(path).resolve()
        meta_path = path / META_FILE
        if not path.is_dir():
            raise ReplayFormatError(f"{path}: no such replay directory")
        if not meta_path.is_file():
            raise ReplayFormatError(f"{meta_path}: missing; {path} is not a saved Replay")
        try:
            with open(meta_path) as fh:
                meta = json.load(fh)
        except (OSError, ValueError) as e:
            raise ReplayFormatError(f"{meta_path}: corrupt or unreadable meta.json ({e})") from e
        if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
            raise ReplayFormatError(f"{meta_path}: not a {FORMAT_NAME} meta file")
        if meta.get("version") != FORMAT_VERSION:
            raise ReplayFormatError(
                f"{meta_path}: format version {meta.get('version')!r}, this code reads {FORMAT_VERSION}"
            )
        required = (
            "capacity", "frame_shape", "action_dim", "frame_stack", "nstep", "gamma", "seq_len",
            "next", "episode_start", "storage", "save_id", "complete",
        )  # fmt: skip
        missing = [k for k in required if k not in meta]
        if missing:
            raise ReplayFormatError(f"{meta_path}: missing fields {missing}")
        if meta["complete"] is not True:
            raise ReplayFormatError(f"{meta_path}: the last save to {path} was interrupted; the data is inconsistent")
        rb = cls.__new__(cls)
        try:
            overrides = {"frame_stack": frame_stack, "nstep": nstep, "gamma": gamma, "seq_len": seq_len}
            settings: dict[str, Any] = {k: meta[k] if v is None else v for k, v in overrides.items()}
            rb._configure(
                meta["capacity"],
                tuple(meta["frame_shape"]),
                meta["action_dim"],
                settings["frame_stack"],
                settings["nstep"],
                settings["gamma"],
                settings["seq_len"],
                device,
            )
        except (TypeError, ValueError) as e:
            raise ReplayFormatError(f"{meta_path}: invalid settings ({e})") from e
        nxt, ep = meta["next"], meta["episode_start"]
        counters_ok = isinstance(nxt, int) and isinstance(ep, int) and nxt >= 0
        counters_ok = counters_ok and (ep == -1 if nxt == 0 else 0 <= ep < nxt)
        if not counters_ok:
            raise ReplayFormatError(f"{meta_path}: invalid counters next={nxt!r}, episode_start={ep!r}")

        name = meta["storage"]
        if not (isinstance(name, str) and name.startswith("storage-") and Path(name).name == name):
            raise ReplayFormatError(f"{meta_path}: invalid storage name {name!r}")
        storage = path / name
        if not storage.is_dir():
            raise ReplayFormatError(f"{path}: storage directory {storage.name} is missing")
        try:
            td = TensorDict.load_memmap(storage, mode="r", allow_pickle=False)
        except Exception as e:  # noqa: BLE001 - tensordict raises several types; all mean "unreadable"
            raise ReplayFormatError(
                f"{storage}: cannot read the memory-mapped tensors ({type(e).__name__}: {e})"
            ) from e
        c = rb.capacity
        expected = {
            "frames": ((c, *rb.frame_shape), torch.uint8),
            "actions": ((c, rb.action_dim), torch.float32),
            "rewards": ((c,), torch.float32),
            "discounts": ((c,), torch.float32),
            "ep_start": ((c,), torch.int64),
        }
        for key, (shape, dtype) in expected.items():
            if key not in td.keys():
                raise ReplayFormatError(f"{storage}: tensor '{key}' is missing")
            x = td.get(key)
            if tuple(x.shape) != shape or x.dtype != dtype:
                raise ReplayFormatError(
                    f"{storage}: tensor '{key}' expected {shape} {dtype}, got {tuple(x.shape)} {x.dtype}"
                )
            file = getattr(x, "filename", None)
            if file is not None and os.path.getsize(file) < x.numel() * x.element_size():
                raise ReplayFormatError(f"{storage}: file of tensor '{key}' is truncated")
            # Plain tensors (not the MemoryMappedTensor subclass) keep torch ops on the fast path.
            x = x.as_subclass(torch.Tensor)
            if rb.device.type != "cpu":
                x = x.to(rb.device)
            setattr(rb, f"_{key}", x)
        rb._sampleable = torch.zeros((c,), dtype=torch.bool, device=rb.device)
        rb._next, rb._episode_start = nxt, ep
        lo = max(0, nxt - c)
        if nxt > 0:
            # The held slots' episode starts must not be in the future of the slot.
            g = torch.arange(lo, nxt, device=rb.device)
            if bool((rb._ep_start[g % c] > g).any()):
                raise ReplayFormatError(f"{storage}: ep_start is inconsistent with the slot counter")
            rb._refresh(lo, nxt)
        rb._valid = None
        same = all(settings[k] == meta[k] for k in settings)
        rb._saved = {path: (meta["save_id"], nxt)} if same else {}
        return rb
