"""The fast update computes the reference's math.

The optimised path (channels_last convolutions with an (H, W, C) flatten, gather augmentation,
batched no-grad encoder passes, fused Adam) and the plain one (`taco bench --baseline`: NCHW, one
encoder call per pass, grid_sample augmentation, a per-tensor loop Adam) start from the same
function (the plain path's trunk columns reordered to its flatten), see the same batches and the
same augmentation shifts, and must agree on every loss and every parameter after 3 updates.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import torch
from tensordict import TensorDict

from taco_rl.agents import SAC, DrQV2
from taco_rl.agents.nets import hwc_to_chw_columns
from taco_rl.runners.bench.bench import as_reference, encoder_only, encoder_passes, feature_readers, flop_floor

OBS = (9, 24, 24)


def batch(seed: int, b: int = 16, a: int = 2, k: int = 3) -> TensorDict:
    g = torch.Generator().manual_seed(seed)
    frames = lambda: torch.randint(0, 256, (b, *OBS), dtype=torch.uint8, generator=g)  # noqa: E731
    return TensorDict(
        {
            "obs": frames(),
            "next_obs": frames(),
            "future_obs": frames(),
            "action": torch.rand(b, a, generator=g) * 2 - 1,
            "action_seq": torch.rand(b, k, a, generator=g) * 2 - 1,
            "reward": torch.rand(b, 1, generator=g),
            "discount": torch.full((b, 1), 0.97),
        },
        batch_size=[b],
    )


def pair(cls, aux: str, optimizer: str = "reference"):
    torch.manual_seed(0)
    fast = cls(OBS, 2, hidden_dim=64, aux=aux, expl_steps=0, optimizer=optimizer)
    plain = copy.deepcopy(fast)
    as_reference(plain)
    return fast, plain


def comparable(agent) -> dict[str, torch.Tensor]:
    """Every parameter, the feature readers' columns in (C, H, W) order for both paths."""
    state = {f"{name}.{k}": v.detach().clone() for name, m in agent.modules().items() for k, v in m.named_parameters()}
    if agent.encoder.channels_last:
        readers = {id(layer.weight) for layer in feature_readers(agent)}
        for name, m in agent.modules().items():
            for k, v in m.named_parameters():
                if id(v) in readers:
                    state[f"{name}.{k}"] = hwc_to_chw_columns(v, agent.encoder.out_shape)
    return state


@pytest.mark.parametrize(
    "cls,aux,optimizer",
    [(DrQV2, "taco", "reference"), (DrQV2, "none", "reference"), (SAC, "taco", "reference"), (DrQV2, "curl", "single")],
)
def test_fast_and_plain_updates_agree(cls, aux, optimizer):
    fast, plain = pair(cls, aux, optimizer)
    assert fast.adam_impl == "fused" and fast.encoder.channels_last and fast.batch_nograd
    assert not plain.encoder.channels_last and not plain.batch_nograd and plain.aug.mode == "grid"
    assert all(not g["fused"] and not g["foreach"] for o in plain.opts.values() for g in o.param_groups)
    before = comparable(plain)
    for k, v in comparable(fast).items():  # the same function at the start
        assert torch.equal(v, before[k]), k
    for i in range(3):
        b = batch(i)
        torch.manual_seed(100 + i)
        m_fast = fast.update(b, 10)
        torch.manual_seed(100 + i)
        m_plain = plain.update(b, 10)
        assert m_fast.keys() == m_plain.keys()
        for k in m_fast:  # every loss and metric, every update
            assert torch.allclose(m_fast[k], m_plain[k], rtol=1e-4, atol=1e-6), (i, k, m_fast[k], m_plain[k])
    after_fast, after_plain = comparable(fast), comparable(plain)
    moved = 0
    for k, v in after_fast.items():
        # Adam divides by |grad|: where a gradient is ~0, float rounding can flip its sign and move that
        # weight by up to a few steps (lr = 1e-4; at most (1 - beta1) / sqrt(1 - beta2) ~ 3.2 steps each
        # update). So all but a rare such element agree within a tenth of one step, and none by more
        # than three updates' worth of those steps.
        diff = (v - after_plain[k]).detach().abs()
        off = diff > 1e-5 + 1e-4 * after_plain[k].abs()
        assert int(off.sum()) <= max(1, v.numel() // 1000), (k, int(off.sum()), v.numel())
        assert float(diff.max()) <= 3 * 3.2 * 1e-4, (k, float(diff.max()))
        moved += not torch.equal(v, before[k])
    assert moved > len(after_fast) // 2  # the updates did change the weights being compared


def test_plain_path_differs_without_the_column_reorder():
    """The comparison above can fail: skipping the reorder changes the function."""
    fast, plain = pair(DrQV2, "none")
    with torch.no_grad():
        for layer in feature_readers(plain):
            layer.weight.copy_(torch.roll(layer.weight, 1, dims=1))
    b = batch(0)
    torch.manual_seed(1)
    m_fast = fast.update(b, 10)
    torch.manual_seed(1)
    m_plain = plain.update(b, 10)
    assert not torch.allclose(m_fast["critic_q1"], m_plain["critic_q1"], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(
    "aux,optimizer,batched,expected",
    [
        ("taco", "reference", True, [(1, True), (1, False), (1, True), (2, False)]),
        ("taco", "reference", False, [(1, True), (1, False), (1, True), (1, False), (1, False)]),
        ("curl", "single", True, [(1, True), (2, False)]),
        ("none", "reference", True, [(1, True), (1, False)]),
    ],
)
def test_encoder_passes_are_the_updates(aux, optimizer, batched, expected):
    """bench's encoder_ms times exactly the encoder calls an update makes."""
    torch.manual_seed(0)
    ag = DrQV2(OBS, 2, hidden_dim=32, aux=aux, expl_steps=0, optimizer=optimizer, batch_nograd=batched)
    assert encoder_passes(ag, batch(0), 10) == expected


def conv_flops(hw: int, cin: int) -> list[int]:
    """Forward FLOPs per sample of each encoder convolution (3x3, 32 out, strides 2,1,1,1, no padding)."""
    out, flops = (hw - 3) // 2 + 1, []
    for i in range(4):
        flops.append(2 * out * out * 32 * (cin if i == 0 else 32) * 9)
        out -= 2
    return flops


@pytest.mark.parametrize("aux", ["none", "taco"])
def test_flop_floor_counts_the_encoder_passes_and_the_rest(aux):
    """encoder FLOPs by hand: a no-grad pass is the forward; a grad pass adds the weight gradient of
    every layer and the input gradient of all but the first (its input, the frames, needs none)."""
    torch.manual_seed(0)
    ag = DrQV2(OBS, 2, hidden_dim=32, aux=aux, expl_steps=0)
    b, step = batch(0), 10
    passes = encoder_passes(ag, b, step)
    per = conv_flops(OBS[1], OBS[0])
    expected = sum(m * len(b) * (sum(per) + (sum(per) + sum(per[1:]) if grad else 0)) for m, grad in passes)
    r = flop_floor(ag, b, step, encoder_only(ag, b, passes))
    assert r["encoder_gflop"] * 1e9 == pytest.approx(expected)
    # the rest is the trunks' and heads' matrix multiplies: present, and smaller than the encoder's share
    assert 1.0 < r["flop_floor"] < 3.0


def test_as_reference_refuses_a_trained_learner():
    fast, _ = pair(DrQV2, "none")
    fast.update(batch(0), 10)
    with pytest.raises(ValueError, match="not updated yet"):
        as_reference(fast)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (fused CUDA Adam, cuDNN channels_last)")
def test_fast_and_plain_agree_on_cuda():
    torch.manual_seed(0)
    fast = DrQV2(OBS, 2, hidden_dim=64, aux="taco", expl_steps=0, device="cuda")
    plain = copy.deepcopy(fast)
    as_reference(plain)
    for i in range(3):
        b = batch(i).to("cuda")
        torch.manual_seed(100 + i)
        m_fast = fast.update(b, 10)
        torch.manual_seed(100 + i)
        m_plain = plain.update(b, 10)
        for k in m_fast:
            assert torch.allclose(m_fast[k], m_plain[k], rtol=1e-3, atol=1e-5), (i, k)


# ---------------------------------------------------------------- env stepping overlapped with updates
TINY = [
    "task=point_reach",
    "hidden_dim=32",
    "batch_size=16",
    "seed_frames=100",
    "expl_steps=50",
    "eval_episodes=2",
    "save_video=false",
    "frames=300",
    "eval_every_frames=100",
    "checkpoint_every_frames=1000",
]


def _run(tmp_path, overlap: str):
    import threading

    from taco_rl.runners.core.config import resolve
    from taco_rl.runners.online.train import Trainer

    trainer = Trainer(resolve([*TINY, f"env_overlap={overlap}", f"run_dir={tmp_path / overlap}"]), progress=False)
    threads, step = set(), trainer.env.step

    def recording_step(action):
        threads.add(threading.current_thread().name)
        return step(action)

    trainer.env.step = recording_step
    trainer.train()
    params = {f"{n}.{k}": v.clone() for n, m in trainer.agent.modules().items() for k, v in m.state_dict().items()}
    return params, (tmp_path / overlap / "eval.csv").read_text(), threads, trainer.replay


@pytest.mark.slow  # two short training runs
def test_env_overlap_is_bit_identical_to_the_serial_loop(tmp_path):
    serial, eval_serial, threads_serial, replay_serial = _run(tmp_path, "serial")
    overlap, eval_overlap, threads_overlap, replay_overlap = _run(tmp_path, "thread")
    assert threads_serial == {"MainThread"} and all(t.startswith("env-step") for t in threads_overlap)
    assert eval_serial == eval_overlap and len(eval_serial.splitlines()) == 5  # header + 4 evaluations
    assert serial.keys() == overlap.keys()
    for k in serial:
        assert torch.equal(serial[k], overlap[k]), k
    torch.manual_seed(0)
    a = replay_serial.sample(32)
    torch.manual_seed(0)
    b = replay_overlap.sample(32)
    for k in a.keys():
        assert torch.equal(a[k], b[k]), k


def test_env_stepper_protocol():
    from taco_rl.runners.online.stepper import EnvStepper

    class Env:
        def step(self, action):
            return action * 2

    for overlap in (False, True):
        s = EnvStepper(Env(), overlap)
        with pytest.raises(RuntimeError, match="no step was started"):
            s.result()
        s.start(3)
        with pytest.raises(RuntimeError, match="not collected"):
            s.start(4)
        assert s.result() == 6
        s.start(5)
        s.close()  # waits for the step in flight


def test_bench_reports_encoder_floor_loop_and_projection(capsys):
    import json

    from taco_rl.runners.cli import main

    assert (
        main(
            [
                "bench",
                "task=point_reach",
                "hidden_dim=32",
                "batch_size=16",
                "--updates",
                "2",
                "--samples",
                "2",
                "--env-steps",
                "20",
                "--loop-steps",
                "6",
                "--num-envs",
                "",
            ]
        )
        == 0
    )
    r = json.loads(capsys.readouterr().out)
    assert r["update_gflop"] > r["encoder_gflop"] > 0 and r["flop_floor"] == pytest.approx(
        r["update_gflop"] / r["encoder_gflop"]
    )
    assert r["encoder_ms"] > 0 and r["overhead"] == pytest.approx(r["update_ms"] / r["encoder_ms"])
    assert r["page_faults_per_round"] >= 0
    assert r["loop_fps_serial"] > 0 and r["loop_fps_thread"] > 0
    updates = 1e6 / (r["settings"]["action_repeat"] * r["settings"]["update_every_steps"])
    assert r["updates_per_1M_frames"] == updates
    # evaluation, unmeasured (no --eval): its env frames at env_fps
    s = r["settings"]
    eval_h = 1e6 / s["eval_every_frames"] * s["eval_episodes"] * 50 * s["action_repeat"] / r["env_fps"] / 3600
    assert r["eval_hours_per_1M_frames"] == pytest.approx(eval_h) and r["eval_hours_source"].startswith("estimated")
    hours = updates * (r["update_ms"] + r["sample_ms"]) / 3.6e6 + 1e6 / r["env_fps"] / 3600 + eval_h
    assert r["hours_per_1M_frames"] == pytest.approx(hours)
    assert r["hours_per_1M_frames_loop"] == pytest.approx(1e6 / r["loop_fps_thread"] / 3600 + eval_h)


def test_cpu_malloc_setting():
    import sys

    from taco_rl.runners.core.config import ConfigError, resolve
    from taco_rl.runners.core.cpu_memory import set_cpu_malloc

    with pytest.raises(ValueError, match="expected one of keep, system"):
        set_cpu_malloc("fast")
    with pytest.raises(ConfigError, match="cpu_malloc"):
        resolve(["cpu_malloc=fast"])
    assert set_cpu_malloc("system") is False  # nothing applied yet in this process
    if sys.platform.startswith("linux"):  # glibc
        assert set_cpu_malloc("keep") is True
        x = torch.ones(64, 2**20)  # 256 MB from the heap, freed, allocated again
        del x
        assert torch.zeros(64, 2**20).sum() == 0


KEEP_PROBE = """
import resource, torch
from taco_rl.runners.core.cpu_memory import set_cpu_malloc
from taco_rl.agents.nets import Encoder
torch.set_num_threads(1)
assert set_cpu_malloc("keep")
torch.manual_seed(0)
enc, x = Encoder((9, 84, 84)), torch.randint(0, 256, (128, 9, 84, 84), dtype=torch.uint8)
faults = []
for _ in range(6):  # the same big temporaries every round, as in a learner's updates
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    enc(x).sum().backward()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(*faults)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_cpu_malloc_keep_reuses_freed_memory_without_page_faults():
    """Each round's temporaries come from memory the previous rounds freed: few fresh page faults once
    warm (measured: at most ~6k pages over the last 3 rounds). A heap trimmed on every free (the trim
    threshold passed to mallopt wrapping past INT_MAX) faulted 70k-100k pages over those rounds."""
    import subprocess

    out = subprocess.run(
        [sys.executable, "-c", KEEP_PROBE], capture_output=True, text=True, check=True, cwd=Path(__file__).parents[1]
    ).stdout
    faults = [int(n) for n in out.split()]
    assert faults[0] > 10_000 and sum(faults[3:]) < 20_000, faults


def test_bf16_encoder_is_the_fp32_function_to_bf16_precision():
    """Under autocast the frames go uint8 -> bf16 directly (the normalisation folded into conv 1)."""
    from taco_rl.agents.nets import Encoder

    torch.manual_seed(0)
    enc = Encoder(OBS)
    x = torch.randint(0, 256, (8, *OBS), dtype=torch.uint8)
    with torch.no_grad():
        ref = enc(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = enc(x)
    assert low.dtype == torch.bfloat16
    err = (low.float() - ref).norm() / ref.norm()
    assert 1e-5 < err < 2e-2, err  # bf16 rounding: present, and small


def test_env_stepper_thread_steps_a_rendering_dm_control_env_like_the_serial_loop():
    """dm_control binds its EGL context to the thread that first renders: every env call of the
    stepper (resets included) runs on its worker, and the frames are the serial loop's."""
    import numpy as np

    from taco_rl.envs import make_env
    from taco_rl.runners.online.stepper import EnvStepper

    runs = []
    for overlap in (False, True):
        env = make_env("cartpole_balance", 3, action_repeat=2, image_size=32)
        stepper, frames = EnvStepper(env, overlap), []
        for episode in range(2):
            frames.append(stepper.call(env.reset, seed=episode)[0])
            for t in range(3):
                stepper.start(np.full(env.action_space.shape, 0.3 * t - 0.3, dtype=np.float32))
                frames.append(stepper.result()[0])
        stepper.close()
        runs.append(np.stack(frames))
    assert runs[0].shape == (8, 9, 32, 32) and np.array_equal(runs[0], runs[1])


def test_adam_kernels_are_named_and_checked():
    from taco_rl.agents.learner import adam, set_adam_impl

    params = [torch.nn.Parameter(torch.ones(3))]
    for impl in ("fused", "foreach", "plain"):
        opt = adam(params, 1e-3, impl)
        assert (opt.param_groups[0]["fused"], opt.param_groups[0]["foreach"]) == (
            {"fused": True, "foreach": None, "plain": None}[impl],
            impl == "foreach",
        )
    for bad in (lambda: adam(params, 1e-3, "turbo"), lambda: set_adam_impl(opt, "turbo")):
        with pytest.raises(ValueError, match="adam impl 'turbo': expected one of"):
            bad()
