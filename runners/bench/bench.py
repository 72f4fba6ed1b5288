"""`taco bench`: the one way speed and memory claims are made.

Builds the learner and replay a config describes, fills the replay with synthetic episodes, and
times replay sampling, learner updates, the update's encoder passes alone (its floor) and env
stepping (faithful and fast render). With `--baseline` it also times the same math the way the
reference implementation runs it (grid_sample augmentation, NCHW convolutions, one encoder call
per no-grad pass, a per-tensor loop Adam), interleaved with the others in the same process, so
ratios are measured in one run. `--loop-steps` times the training loop itself (serial and with
the env stepping overlapped). Env stepping is also timed in 1, 2 and 4 worker processes
(`--num-envs`), and with `--eval` one evaluation in-process and with `eval_workers`
(runners/bench/whole_run.py); every result carries projected hours per 1M frames, evaluation included.
"""

from __future__ import annotations

import dataclasses
import resource
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from taco_rl.agents.learner import set_adam_impl
from taco_rl.agents.nets import hwc_to_chw_columns
from taco_rl.envs import make_env
from taco_rl.envs.registry import env_shapes
from taco_rl.runners.bench.whole_run import eval_hours, whole_run
from taco_rl.runners.core.config import Config
from taco_rl.runners.core.run import env_kwargs
from taco_rl.runners.online.stepper import EnvStepper
from taco_rl.runners.online.train import build_agent, make_replay, resolve_device


def _timed(fn: Callable[[], Any], repeats: int, warmup: int, device: torch.device) -> float:
    """Median wall-clock milliseconds of `fn` over `repeats` calls after `warmup` calls."""
    times = []
    for i in range(warmup + repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t = time.perf_counter()
        out = fn()
        if isinstance(out, dict):  # force any pending device work the metrics depend on
            [float(v) for v in out.values()]
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i >= warmup:
            times.append((time.perf_counter() - t) * 1000.0)
    return float(np.median(times))


def _timed_side_by_side(
    fns: dict[str, Callable[[], Any]], repeats: int, warmup: int, device: torch.device
) -> dict[str, float]:
    """Median milliseconds of each fn, the calls interleaved (one of each per round), so a change in
    the machine's load during the measurement moves every figure alike and their ratios stay fair."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for i in range(warmup + repeats):
        for name, fn in fns.items():
            ms = _timed(fn, 1, 0, device)
            if i >= warmup:
                times[name].append(ms)
    return {k: float(np.median(v)) for k, v in times.items()}


def encoder_passes(agent, batch, step: int) -> list[tuple[int, bool]]:
    """The encoder calls `agent.update` makes, as (inputs as a multiple of the batch, with grad),
    recorded during one update (which also serves as the warm-up)."""
    calls: list[tuple[int, bool]] = []
    n = batch["obs"].shape[0]
    hook = agent.encoder.register_forward_hook(
        lambda m, i, o: calls.append((i[0].shape[0] // n, torch.is_grad_enabled()))
    )
    try:
        agent.update(batch, step)
    finally:
        hook.remove()
    return calls


def encoder_only(agent, batch, passes: list[tuple[int, bool]]) -> Callable[[], None]:
    """The update's encoder passes alone: same encoder (a copy), layout, precision, batch and calls;
    grad passes include their backward (to the encoder's weights, as in the update)."""
    import copy

    enc = copy.deepcopy(agent.encoder)
    if getattr(agent.encoder, "_compiled_call_impl", None) is not None:
        enc.compile()
    with torch.no_grad():
        x = agent.aug(batch["obs"])
    inputs = {m: torch.cat([x] * m) if m > 1 else x for m, _ in passes}

    def run() -> None:
        for m, grad in passes:
            with agent.autocast(), torch.set_grad_enabled(grad):
                out = enc(inputs[m])
            if grad:
                out.backward(torch.ones_like(out))
        enc.zero_grad(set_to_none=True)

    return run


def matmul_flops(fn: Callable[[], Any]) -> int:
    """Convolution and matrix-multiply FLOPs of one call of `fn`, backward included
    (torch.utils.flop_counter; elementwise ops, norms and the optimizer are not counted)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def flop_floor(agent, batch, step: int, encoder_fn: Callable[[], None]) -> dict[str, float]:
    """How far above its encoder passes an update must be, whatever the kernels: the update's
    matmul and convolution GFLOP against those of its encoder passes (same calls, backward included).
    `flop_floor` = update / encoder FLOPs is the `overhead` an update would have if every matrix
    multiply ran at the convolutions' FLOP rate; what is left of `overhead` above it is kernel
    efficiency, elementwise work and framework time. Costs one extra update (a warm-up)."""
    update = matmul_flops(lambda: agent.update(batch, step))
    encoder = matmul_flops(encoder_fn)
    return {"update_gflop": update / 1e9, "encoder_gflop": encoder / 1e9, "flop_floor": update / encoder}


def fill_replay(replay, episodes: int, length: int, action_dim: int, gen: torch.Generator) -> None:
    """Synthetic episodes of random frames (content does not change sampling or update cost)."""
    c, h, w = replay.frame_shape
    for _ in range(episodes):
        frames = torch.randint(0, 256, (length + 1, c, h, w), dtype=torch.uint8, generator=gen)
        actions = torch.rand(length, action_dim, generator=gen) * 2 - 1
        replay.add_episode(frames, actions, torch.rand(length, generator=gen), torch.ones(length))


def env_fps(cfg: Config, fast: bool, steps: int) -> float:
    env = make_env(
        cfg.task,
        cfg.seed,
        action_repeat=cfg.action_repeat,
        frame_stack=cfg.frame_stack,
        image_size=cfg.image_size,
        fast_render=fast,
    )
    env.reset(seed=cfg.seed)
    env.step(env.action_space.sample())  # first render creates the GL context: not timed
    frames, t = 0, time.perf_counter()
    for _ in range(steps):
        _, _, terminated, truncated, info = env.step(env.action_space.sample())
        frames += int(info.get("frames", cfg.action_repeat))
        if terminated or truncated:
            env.reset()
    fps = frames / (time.perf_counter() - t)
    env.close()
    return fps


def loop_fps(cfg: Config, agent, replay, step: int, steps: int, overlap: bool) -> float:
    """Frames per second of the online loop (act, env step, sample + update every
    `update_every_steps` steps), as runners/online/train.py runs it; the replay holds synthetic frames."""
    env = make_env(cfg.task, cfg.seed, **env_kwargs(cfg))
    stepper = EnvStepper(env, overlap)
    stepper.call(env.reset, seed=cfg.seed)
    obs = stepper.call(env.step, env.action_space.sample())[0]  # the first render makes the GL context
    frames, t = 0, time.perf_counter()
    for i in range(steps):
        stepper.start(agent.act(obs, step, eval_mode=False))
        if i % cfg.update_every_steps == 0:
            agent.update(replay.sample(cfg.batch_size), step)
        obs, _, terminated, truncated, info = stepper.result()
        frames += int(info.get("frames", cfg.action_repeat))
        if terminated or truncated:
            obs, _ = stepper.call(env.reset)
    agent.act(obs, step, eval_mode=False)  # waits for the last update
    fps = frames / (time.perf_counter() - t)
    stepper.close()  # closes the env on its thread
    return fps


def projection(cfg: Config, r: dict[str, Any]) -> dict[str, Any]:
    """Projected hours per 1M env frames, evaluation included.

    hours_per_1M_frames = (1e6 / (action_repeat * update_every_steps)) * (update_ms + sample_ms) / 3.6e6
                          + (1e6 / env_fps) / 3600            (serial loop; acting not counted)
                          + eval_hours_per_1M_frames
    eval_hours_per_1M_frames = (1e6 / eval_every_frames) * (seconds of one evaluation) / 3600, the
    evaluation measured with --eval (eval_workers as configured) or else estimated from env_fps
    (`eval_hours_source` says which; see bench_run.eval_hours). Without an env measurement
    (--skip-env) only the update part is given (`_updates_only`). With --loop-steps the measured
    loop gives hours_per_1M_frames_loop = 1e6 / loop_fps_thread / 3600 + eval_hours_per_1M_frames.
    """
    updates = 1e6 / (cfg.action_repeat * cfg.update_every_steps)
    update_h = updates * (r["update_ms"] + r["sample_ms"]) / 3.6e6
    out: dict[str, Any] = {"updates_per_1M_frames": updates, "hours_per_1M_frames_updates_only": update_h}
    evaluation = eval_hours(cfg, r)
    eval_h = 0.0
    if evaluation is not None:
        eval_h, out["eval_hours_source"] = evaluation
        out["eval_hours_per_1M_frames"] = eval_h
    if "env_fps" in r:
        out["hours_per_1M_frames"] = update_h + 1e6 / r["env_fps"] / 3600 + eval_h
    if "loop_fps_thread" in r:
        out["hours_per_1M_frames_loop"] = 1e6 / r["loop_fps_thread"] / 3600 + eval_h
    return out


def as_reference(agent) -> None:
    """Switch a fresh learner (no update yet) to the reference implementation's way of computing the
    same function: grid_sample augmentation, NCHW convolutions with a (C, H, W) flatten (the columns
    of every Linear that reads encoder features reordered to match), one encoder call per no-grad
    pass, a per-tensor loop Adam."""
    if any(o.state for o in agent.opts.values()):
        raise ValueError("as_reference needs a learner that has not updated yet (its Adam state is not reordered)")
    agent.batch_nograd = False
    agent.aug.mode = "grid"
    if agent.encoder.channels_last:
        agent.encoder.channels_last = False
        agent.encoder.to(memory_format=torch.contiguous_format)
        with torch.no_grad():
            for layer in feature_readers(agent):
                layer.weight.copy_(hwc_to_chw_columns(layer.weight, agent.encoder.out_shape))
    for opt in agent.opts.values():
        set_adam_impl(opt, "plain")


def feature_readers(agent) -> list[torch.nn.Linear]:
    """The Linear layers that read the encoder's flat features (the first layer of each trunk)."""
    trunks = [agent.actor.trunk]
    if agent.critic is not None:
        trunks += [agent.critic.trunk, agent.critic_target.trunk]
    if agent.aux is not None:
        trunks.append(agent.aux.proj_s)
    if hasattr(agent, "value"):  # IQL's value head
        trunks.append(agent.value.net[0])
    return [t[0] for t in trunks]


def _setup(cfg: Config):
    """Seeded RNGs, the device, the task's shapes and a synthetic data size of 4 batches or more:
    (device, obs_shape, frame_shape, action_dim, generator, episodes, episode length)."""
    torch.manual_seed(cfg.seed)
    device = resolve_device(cfg.device)
    probe = make_env(
        cfg.task, cfg.seed, action_repeat=cfg.action_repeat, frame_stack=cfg.frame_stack, image_size=cfg.image_size
    )
    obs_shape, action_dim = env_shapes(probe)
    probe.close()
    length = 500
    episodes = max(4, (4 * cfg.batch_size) // length + 2)
    return device, obs_shape, (3, *obs_shape[1:]), action_dim, torch.Generator().manual_seed(cfg.seed), episodes, length


def _context(cfg: Config, device: torch.device) -> dict[str, Any]:
    """What every bench result carries besides its timings: memory, machine, versions, settings."""
    return {
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "device": str(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "settings": dataclasses.asdict(cfg),
    }


def bench(
    cfg: Config,
    updates: int = 5,
    samples: int = 20,
    env_steps: int = 200,
    baseline: bool = False,
    skip_env: bool = False,
    loop_steps: int = 0,
    compile_encoder: bool = False,
    num_envs: tuple[int, ...] = (1, 2, 4),
    evaluation: bool = False,
) -> dict[str, Any]:
    device, obs_shape, frame_shape, action_dim, gen, episodes, length = _setup(cfg)
    replay = make_replay(dataclasses.replace(cfg, capacity=episodes * (length + 1)), frame_shape, action_dim, device)
    fill_replay(replay, episodes, length, action_dim, gen)

    result: dict[str, Any] = {}
    result["sample_ms"] = _timed(lambda: replay.sample(cfg.batch_size), samples, 2, device)
    batch = replay.sample(cfg.batch_size)
    step = cfg.expl_steps + 1
    agent = build_agent(cfg, obs_shape, action_dim, device)
    if compile_encoder:  # off by default: not measured on CPU; tests/gpu_check.sh times it on a GPU
        agent.encoder.compile()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    # the update, its encoder passes alone (and the reference-style update), interleaved:
    # overhead = update_ms / encoder_ms and update_speedup come from the same rounds
    encoder_fn = encoder_only(agent, batch, encoder_passes(agent, batch, step))
    result.update(flop_floor(agent, batch, step, encoder_fn))
    fns = {"update_ms": lambda: agent.update(batch, step), "encoder_ms": encoder_fn}
    if baseline:
        ref = build_agent(cfg, obs_shape, action_dim, device)
        as_reference(ref)
        fns["baseline_update_ms"] = lambda: ref.update(batch, step)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    result.update(_timed_side_by_side(fns, updates, 1, device))
    # fresh memory pages the timed rounds touched (each costs a fault and a zeroing): ~0 once the
    # allocator reuses freed memory (cpu_malloc=keep), tens of thousands per update when it does not
    result["page_faults_per_round"] = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / (updates + 1)
    result["overhead"] = result["update_ms"] / result["encoder_ms"]
    if baseline:
        result["update_speedup"] = result["baseline_update_ms"] / result["update_ms"]
    if device.type == "cuda":
        # everything resident during the updates: replay storage, the batch, the learner(s)
        result["peak_gpu_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    if not skip_env:
        result["env_fps"] = env_fps(cfg, False, env_steps)
        result["env_fps_fast"] = env_fps(cfg, True, env_steps)
        result.update(whole_run(cfg, agent, list(num_envs), env_steps, evaluation))
    if loop_steps > 0:  # the training loop itself, serial and with the env stepping during updates
        for mode in ("serial", "thread"):
            result[f"loop_fps_{mode}"] = loop_fps(cfg, agent, replay, step, loop_steps, mode == "thread")
    result.update(projection(cfg, result))
    result["bytes_per_transition"] = replay.bytes_per_transition
    # what a buffer of stacked observations (the reference design) stores per transition
    result["stacked_bytes_per_transition"] = int(np.prod(obs_shape)) + 4 * (action_dim + 2)
    return {**result, **_context(cfg, device)}


def bench_offline(cfg, updates: int = 5, samples: int = 20, vs_online: bool = False) -> dict[str, Any]:
    """`taco bench mode=offline`: sampling from a dataset as `taco offline` opens it (a synthetic one
    written to a temporary folder: memory-mapped on the CPU, or copied to the GPU when it fits) and
    the offline learner's update. With `vs_online`, the online DrQ-v2 update with the same aux and
    batch size is timed in the same process (`online_update_ms`, `offline_vs_online`). `updates_per_s`
    and `projected_hours` (for `updates=`) count one sample and one update per step, as the loop runs."""
    import tempfile
    from pathlib import Path

    from taco_rl.runners.core.config import AUX_PRESETS, Config
    from taco_rl.runners.data.datasets import new_replay, write_dataset
    from taco_rl.runners.offline.train import open_dataset

    device, obs_shape, frame_shape, action_dim, gen, episodes, length = _setup(cfg)
    result: dict[str, Any] = {"mode": "offline"}
    step = 1000
    with tempfile.TemporaryDirectory() as tmp:
        source = new_replay(episodes * (length + 1), frame_shape, action_dim)
        fill_replay(source, episodes, length, action_dim, gen)
        path = Path(tmp) / "dataset"
        write_dataset(source, path, task=cfg.task, source="taco bench (random frames)")
        del source
        dataset, _, where = open_dataset(dataclasses.replace(cfg, dataset=str(path)), device)
        result["dataset_device"], result["dataset_where"] = str(dataset.device), where
        result["sample_ms"] = _timed(lambda: dataset.sample(cfg.batch_size).to(device), samples, 2, device)
        batch = dataset.sample(cfg.batch_size).to(device)
        agent = build_agent(cfg, obs_shape, action_dim, device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        fns = {"update_ms": lambda: agent.update(batch, step)}
        if vs_online:
            shared = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(Config)}
            online = Config(
                **{**shared, "agent": "drqv2", **AUX_PRESETS.get(cfg.aux, {}), "batch_size": cfg.batch_size}
            )
            replay = make_replay(
                dataclasses.replace(online, capacity=episodes * (length + 1)), frame_shape, action_dim, device
            )
            fill_replay(replay, episodes, length, action_dim, gen)
            online_batch = replay.sample(cfg.batch_size)
            online_agent = build_agent(online, obs_shape, action_dim, device)
            fns["online_update_ms"] = lambda: online_agent.update(online_batch, step)
            result["online_settings"] = {
                "agent": online.agent,
                "aux": online.aux,
                "taco_k": online.taco_k,
                "batch_size": online.batch_size,
            }
        result.update(_timed_side_by_side(fns, updates, 1, device))  # interleaved: a fair ratio on a busy machine
        if device.type == "cuda":
            result["peak_gpu_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
        if vs_online:
            result["offline_vs_online"] = result["update_ms"] / result["online_update_ms"]
    # the offline loop samples then updates, one after the other: its rate and the configured budget's hours
    result["updates_per_s"] = 1000.0 / (result["sample_ms"] + result["update_ms"])
    result["projected_hours"] = cfg.updates / result["updates_per_s"] / 3600.0
    return {**result, **_context(cfg, device)}
