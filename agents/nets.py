"""Networks shared by every learner (SPEC section 3).

Frames reach the learner as uint8; augmentation and normalisation happen here, on the learner's
device, so the replay never stores floats. Convolutions run channels_last (faster on CPU and on
tensor-core GPUs); the flattened features keep NCHW order so the math is that of the reference.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeAlias

import torch
import torch.nn as nn
import torch.nn.functional as F

from taco_rl.learner_choices import MIN_IMAGE_SIZE

# what a learner's update reads: batch key (obs, action, reward, ...) -> tensor (a TensorDict or a dict)
Batch: TypeAlias = Mapping[str, torch.Tensor]


def weight_init(m: nn.Module) -> None:
    """Orthogonal weights (ReLU gain for convolutions), zero biases."""
    if isinstance(m, nn.Linear):
        nn.init.orthogonal_(m.weight)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Conv2d):
        nn.init.orthogonal_(m.weight, nn.init.calculate_gain("relu"))
        if m.bias is not None:
            nn.init.zeros_(m.bias)


def mlp(inp: int, hidden: int, out: int, depth: int = 2) -> nn.Sequential:
    """`depth` hidden ReLU layers of width `hidden`, then a linear output."""
    layers: list[nn.Module] = []
    for i in range(depth):
        layers += [nn.Linear(inp if i == 0 else hidden, hidden), nn.ReLU(inplace=True)]
    layers.append(nn.Linear(hidden, out))
    return nn.Sequential(*layers)


class RandomShift(nn.Module):
    """Random shift by up to `pad` pixels with replicate padding, one draw per sample per call.

    Replicate padding followed by an integer crop equals clamping the source indices, so the shift is
    a single gather on the (uint8 or float) frames: no padded copy, no `grid_sample`.
    """

    def __init__(self, pad: int = 4) -> None:
        super().__init__()
        self.pad = pad
        self.mode = "gather"  # "grid": the reference's pad + grid_sample formulation (for benchmarks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "grid":
            return self._grid(x)
        n, c, h, w = x.shape
        shift = torch.randint(0, 2 * self.pad + 1, (n, 2), device=x.device) - self.pad
        rows = (torch.arange(h, device=x.device) + shift[:, 1:2]).clamp_(0, h - 1)  # (n, h)
        cols = (torch.arange(w, device=x.device) + shift[:, 0:1]).clamp_(0, w - 1)  # (n, w)
        flat = (rows[:, :, None] * w + cols[:, None, :]).view(n, 1, h * w).expand(n, c, h * w)
        return x.reshape(n, c, h * w).gather(2, flat).view(n, c, h, w)

    def _grid(self, x: torch.Tensor) -> torch.Tensor:
        """Float pad + bilinear sampling on a grid that lands on pixel centres (same values up to rounding)."""
        n, c, h, w = x.shape
        p = self.pad
        x = F.pad(x.float(), (p, p, p, p), mode="replicate")
        size = h + 2 * p
        base = (torch.arange(h, device=x.device, dtype=x.dtype) * 2 + 1) / size - 1.0  # centres of the first h
        grid = torch.stack(torch.meshgrid(base, base, indexing="xy"), dim=-1).expand(n, h, w, 2)
        shift = torch.randint(0, 2 * p + 1, (n, 1, 1, 2), device=x.device).to(x.dtype) * (2.0 / size)
        return F.grid_sample(x, grid + shift, padding_mode="zeros", align_corners=False)


def encoder_out_size(size: int) -> int:
    """Side of the encoder's output map for a size x size input (< 1: the input is too small)."""
    return (size - 3) // 2 + 1 - 6


class Encoder(nn.Module):
    """4 conv layers, 32 channels, 3x3, strides 2,1,1,1; sees obs / 255 - 0.5."""

    def __init__(self, obs_shape: tuple[int, int, int]) -> None:
        super().__init__()
        c, h, w = obs_shape
        self.convnet = nn.Sequential(
            nn.Conv2d(c, 32, 3, stride=2),
            nn.ReLU(inplace=True),
            nn.Conv2d(32, 32, 3, stride=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(32, 32, 3, stride=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(32, 32, 3, stride=1),
            nn.ReLU(inplace=True),
        )
        oh, ow = encoder_out_size(h), encoder_out_size(w)
        if oh < 1 or ow < 1:
            raise ValueError(
                f"image {h}x{w} is too small for the encoder (needs at least {MIN_IMAGE_SIZE}x{MIN_IMAGE_SIZE})"
            )
        self.repr_dim = 32 * oh * ow
        self.out_shape = (32, oh, ow)
        self.channels_last = True
        self.apply(weight_init)
        # torch's type stubs for Module.to leave out the memory_format keyword, which it takes
        self.to(memory_format=torch.channels_last)  # type: ignore[call-overload]

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        if not self.channels_last:  # the reference layout (kept for `taco bench --baseline`)
            return self.convnet(obs.float() / 255.0 - 0.5).flatten(1)
        # obs / 255 - 0.5 is folded into the first convolution: it has no padding, so every output
        # sees a whole window and conv(x / 255 - 0.5; W, b) = conv(x; W / 255, b - 0.5 * sum(W)),
        # the same function up to float rounding. Frames then go from uint8 to the compute dtype in
        # one copy, already in channels_last (0..255 are exact in fp32 and bf16), with no pass to
        # normalise them and none for autocast to cast them.
        device = obs.device.type
        dtype = torch.float32
        if obs.dtype == torch.uint8 and torch.is_autocast_enabled(device):
            dtype = torch.get_autocast_dtype(device)
        if dtype == torch.float32:
            x = obs.to(dtype=dtype, memory_format=torch.channels_last)
        else:  # uint8 -> bf16 with the layout change in one copy takes torch's slow path: two copies
            x = obs.to(dtype).contiguous(memory_format=torch.channels_last)
        first = self.convnet[0]
        if not isinstance(first, nn.Conv2d) or first.bias is None:  # (Sequential's indexing is typed Module)
            raise TypeError(f"the encoder's first layer is {first}, expected a Conv2d with a bias")
        weight = first.weight / 255.0
        bias = first.bias - 0.5 * first.weight.sum(dim=(1, 2, 3))
        h = F.relu(F.conv2d(x, weight, bias, first.stride), inplace=True)
        for layer in list(self.convnet)[2:]:
            h = layer(h)
        # Flatten in (H, W, C) order: a view of the channels_last output instead of a 5 MB/sample
        # copy. The features are the same 32*35*35 values in another order; each trunk's Linear
        # (orthogonally initialised, so its distribution is permutation invariant) sees them in
        # that order consistently, so the model and its training are the reference's.
        return h.permute(0, 2, 3, 1).flatten(1)


def hwc_to_chw_columns(weight: torch.Tensor, out_shape: tuple[int, int, int]) -> torch.Tensor:
    """The weight of a Linear that reads (H, W, C)-ordered features, reordered to read (C, H, W)
    order (the flatten of the reference layout): the same function of the same feature map."""
    c, h, w = out_shape
    return weight.reshape(-1, h, w, c).permute(0, 3, 1, 2).reshape(weight.shape[0], c * h * w).contiguous()


def trunk(repr_dim: int, feature_dim: int) -> nn.Sequential:
    """Linear -> LayerNorm -> Tanh: one per consumer of encoder features."""
    return nn.Sequential(nn.Linear(repr_dim, feature_dim), nn.LayerNorm(feature_dim), nn.Tanh())


class Actor(nn.Module):
    """trunk -> MLP -> `out_mult * |A|` outputs; the learner decides what they mean."""

    def __init__(self, repr_dim: int, action_dim: int, feature_dim: int, hidden_dim: int, out_mult: int = 1) -> None:
        super().__init__()
        self.trunk = trunk(repr_dim, feature_dim)
        self.policy = mlp(feature_dim, hidden_dim, out_mult * action_dim)
        self.apply(weight_init)

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        return self.policy(self.trunk(feat))


class Critic(nn.Module):
    """trunk -> concat(feature, action code) -> two Q heads."""

    def __init__(self, repr_dim: int, action_code_dim: int, feature_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.trunk = trunk(repr_dim, feature_dim)
        self.q1 = mlp(feature_dim + action_code_dim, hidden_dim, 1)
        self.q2 = mlp(feature_dim + action_code_dim, hidden_dim, 1)
        self.apply(weight_init)

    def forward(self, feat: torch.Tensor, action_code: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.heads(self.trunk(feat), action_code.to(feat.dtype))

    def heads(self, z: torch.Tensor, action_code: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Both Q heads on trunk features `z` (..., feature_dim) and codes (..., code_dim): one trunk
        pass can score many actions per state (CQL's sampled actions)."""
        h = torch.cat([z, action_code], dim=-1)  # promotes to the wider dtype
        # Q heads in fp32 even under bf16 autocast: bf16 would round returns near 200 in steps of 1
        with torch.autocast(h.device.type, enabled=False):
            h = h.float()
            return self.q1(h), self.q2(h)


class ActionEncoder(nn.Module):
    """TACO's per-step action encoder `tok`: |A| -> 64 -> Tanh -> d_u.

    It is shared: the critic scores Q(z, tok(a)) and TACO encodes action sequences with it, so it
    lives here and both receive the same instance.
    """

    def __init__(self, action_dim: int, latent_dim: int) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.net = nn.Sequential(nn.Linear(action_dim, 64), nn.Tanh(), nn.Linear(64, latent_dim))
        self.apply(weight_init)

    def forward(self, action: torch.Tensor) -> torch.Tensor:
        return self.net(action)


def latent_action_dim(action_dim: int) -> int:
    """TACO's heuristic size of a latent action: int(1.25 |A|) + 1."""
    return int(1.25 * action_dim) + 1


def cat_rows(parts: list[torch.Tensor]) -> torch.Tensor:
    """torch.cat(parts) along dim 0; a view, not a copy, when the parts already lie back to back in
    one tensor (the split of one batched encoder call) and carry no gradient."""
    first = parts[0]
    offset, adjacent = first.storage_offset(), True
    for p in parts:
        adjacent = (
            adjacent
            and not p.requires_grad
            and p.is_contiguous()
            and p.dtype == first.dtype
            and p.shape[1:] == first.shape[1:]
            and p.storage_offset() == offset
            and p.untyped_storage().data_ptr() == first.untyped_storage().data_ptr()
        )
        offset += p.numel()
    if not adjacent:
        return torch.cat(parts)
    rows = sum(p.shape[0] for p in parts)
    return first.as_strided((rows, *first.shape[1:]), first.stride(), first.storage_offset())


@torch.no_grad()
def soft_update(net: nn.Module, target: nn.Module, tau: float) -> None:
    """target <- tau * net + (1 - tau) * target, as one fused op over all parameters."""
    torch._foreach_lerp_(list(target.parameters()), list(net.parameters()), tau)
