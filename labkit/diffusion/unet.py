"""A small U-Net that predicts the noise ε (or the velocity v) of a noisy image x_t.

The architecture is the DDPM one (Ho et al. 2020, appendix B, after PixelCNN++ / Wide ResNet),
shrunk for a CPU: an encoder of residual blocks that halves the resolution at each level, a middle
block (optionally with self-attention, the only place it is affordable), and a decoder that
doubles it back while concatenating the encoder's activations (the U's skip connections).

Conditioning: the timestep t goes through a sinusoidal embedding (as positions in a Transformer)
and an MLP; the vector is added, per channel, inside every residual block. An optional class label
is embedded and added to that vector. The class table has ``num_classes + 1`` rows: the extra index
``null_label = num_classes`` means "no class", which classifier-free guidance (Ho & Salimans 2022)
trains by dropping labels at random and samples with.

Any image size works: the input is padded on the right and bottom to a multiple of
``2 ** (levels - 1)`` and the output cropped back (28 and 32 px need no padding at 3 levels).

Explained in notebooks/20_diffusion_mini.py.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["UNet", "sinusoidal_embedding", "count_parameters"]


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters of ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def sinusoidal_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Transformer-style embedding of timesteps (Vaswani et al. 2017, §3.5).

    ``emb[i] = sin(t · ω_i)`` for the first half and ``cos(t · ω_i)`` for the second, with
    frequencies ``ω_i = max_period^(-i / (dim/2))`` from 1 down to 1/max_period: nearby t get nearby
    vectors, and every t in ``[0, 1000)`` a distinct one.

    Args:
        t: ``[B]`` timesteps (int or float).
        dim: embedding size (even).

    Returns:
        ``[B, dim]`` float32.
    """
    if dim % 2:
        raise ValueError(f"the time embedding size must be even, got {dim}")
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device) / half)  # (half,)
    angles = t.float()[:, None] * freqs[None]  # (B, half)
    return torch.cat([angles.sin(), angles.cos()], dim=1)  # (B, dim)


def _group_norm(channels: int, groups: int) -> nn.GroupNorm:
    if channels % groups:
        raise ValueError(
            f"GroupNorm needs channels divisible by norm_groups: {channels} % {groups} != 0; "
            "pick base_channels and channel_mults so that every width is a multiple of norm_groups"
        )
    return nn.GroupNorm(groups, channels)


class ResBlock(nn.Module):
    """``x + F(x, emb)``: two 3×3 convs with GroupNorm and SiLU; the conditioning vector is
    projected to one bias per channel and added between them. ``[B, C_in, H, W]`` → ``[B, C_out, H, W]``.
    """

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, dropout: float, groups: int):
        super().__init__()
        self.norm1 = _group_norm(in_ch, groups)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb_proj = nn.Linear(emb_dim, out_ch)
        self.norm2 = _group_norm(out_ch, groups)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        # Zero-init the last conv: each block starts as the identity, so the untrained network is
        # shallow and well-conditioned however deep it is (as in Ho et al.'s code).
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))  # (B, C_out, H, W)
        h = h + self.emb_proj(F.silu(emb))[:, :, None, None]  # one bias per channel from t (and y)
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class SelfAttention(nn.Module):
    """Multi-head self-attention over the H·W positions, with a residual connection.
    ``[B, C, H, W]`` → ``[B, C, H, W]``; cost grows as (H·W)², hence only at the lowest resolution.
    """

    def __init__(self, channels: int, groups: int, num_heads: int = 4):
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"attention channels {channels} must divide into {num_heads} heads")
        self.num_heads = num_heads
        self.norm = _group_norm(channels, groups)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.proj.weight)  # starts as the identity, like ResBlock
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        qkv = self.qkv(self.norm(x)).reshape(b, 3, self.num_heads, c // self.num_heads, h * w)
        q, k, v = qkv.transpose(-1, -2).unbind(1)  # each (B, heads, HW, C/heads)
        out = F.scaled_dot_product_attention(
            q, k, v
        )  # softmax(q kᵀ / √d) v, (B, heads, HW, C/heads)
        out = out.transpose(-1, -2).reshape(b, c, h, w)
        return x + self.proj(out)


class UNet(nn.Module):
    """ε- (or v-) prediction network ``f(x_t, t, y)``. ``[B, C, H, W]`` → ``[B, C, H, W]``.

    Args:
        in_channels: image channels (1 for MNIST, 3 for CIFAR-10); the output has as many.
        base_channels: width of the first level.
        channel_mults: width of each level as a multiple of ``base_channels``; one entry per
            level, and the resolution halves between levels.
        num_res_blocks: residual blocks per level in the encoder (the decoder has one more,
            for the skip from the downsampling step).
        attention: self-attention in the middle block (the lowest resolution).
        num_classes: number of classes for class conditioning, or None for an unconditional model.
            Labels are in ``[0, num_classes]``; ``num_classes`` itself is the null label.
        dropout: dropout inside residual blocks (Ho et al. use 0.1 on CIFAR-10 only; on a CPU
            it also costs ~10 % of a step).
        norm_groups: GroupNorm groups; every width must be a multiple of it.

    The CPU default (16, (1, 2, 4), 1 block, attention) has 0.59 M parameters (0.59 M with 10
    classes); a training step at batch 64 on 28×28 takes about 0.35 s on one CPU thread. Most FLOPs
    are at full resolution, most parameters at the lowest one: widen the deep levels for capacity.
    """

    def __init__(
        self,
        in_channels: int = 1,
        base_channels: int = 16,
        channel_mults: tuple[int, ...] = (1, 2, 4),
        num_res_blocks: int = 1,
        attention: bool = True,
        num_classes: int | None = None,
        dropout: float = 0.0,
        norm_groups: int = 8,
    ):
        super().__init__()
        if num_classes is not None and num_classes < 1:
            raise ValueError(f"num_classes must be ≥ 1, or None for no classes; got {num_classes}")
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.null_label = num_classes  # the "no class" row of the class table (None: no classes)
        self.downsample_factor = 2 ** (len(channel_mults) - 1)
        emb_dim = 4 * base_channels
        self.base_channels = base_channels

        self.time_mlp = nn.Sequential(
            nn.Linear(base_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim)
        )
        self.class_emb = nn.Embedding(num_classes + 1, emb_dim) if num_classes else None

        def block(i: int, o: int) -> ResBlock:
            return ResBlock(i, o, emb_dim, dropout, norm_groups)

        self.conv_in = nn.Conv2d(in_channels, base_channels, 3, padding=1)
        # Encoder: remember every activation's width, the decoder concatenates them in reverse.
        self.down = nn.ModuleList()
        widths, ch = [base_channels], base_channels
        for level, mult in enumerate(channel_mults):
            for _ in range(num_res_blocks):
                self.down.append(block(ch, base_channels * mult))
                ch = base_channels * mult
                widths.append(ch)
            if level < len(channel_mults) - 1:
                self.down.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))  # H → H/2
                widths.append(ch)

        self.mid1 = block(ch, ch)
        self.mid_attn = SelfAttention(ch, norm_groups) if attention else nn.Identity()
        self.mid2 = block(ch, ch)

        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mults))):
            for _ in range(num_res_blocks + 1):
                self.up.append(block(ch + widths.pop(), base_channels * mult))
                ch = base_channels * mult
            if level > 0:
                # H → 2H with a 2×2 "up-conv" that also narrows to the next level's width, as in
                # the original U-Net (Ronneberger et al. 2015): the windows do not overlap, so no
                # checkerboard, and it is cheap at the doubled resolution, where most FLOPs go.
                next_ch = base_channels * channel_mults[level - 1]
                self.up.append(nn.ConvTranspose2d(ch, next_ch, 2, stride=2))
                ch = next_ch

        self.norm_out = _group_norm(ch, norm_groups)
        self.conv_out = nn.Conv2d(ch, in_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)  # predicts 0 at first: the loss starts at E[ε²] = 1
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, x: Tensor, t: Tensor, labels: Tensor | None = None) -> Tensor:
        """Args:
            x: ``[B, C, H, W]`` noisy images x_t.
            t: ``[B]`` int64 timesteps.
            labels: ``[B]`` int64 in ``[0, num_classes]`` (``num_classes`` = no class), or None
                for all-null labels. Must be None for an unconditional model.

        Returns:
            ``[B, C, H, W]`` the predicted ε (or v).
        """
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected images [B, {self.in_channels}, H, W], got {tuple(x.shape)}")
        emb = self.time_mlp(sinusoidal_embedding(t, self.base_channels))  # (B, 4·base)
        if self.class_emb is not None:
            if labels is None:
                labels = torch.full_like(t, self.null_label)
            emb = emb + self.class_emb(labels)
        elif labels is not None:
            raise ValueError("this UNet is unconditional (num_classes=None) but got labels")

        height, width = x.shape[-2:]
        pad_h, pad_w = -height % self.downsample_factor, -width % self.downsample_factor
        h = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate") if pad_h or pad_w else x

        h = self.conv_in(h)
        skips = [h]
        for layer in self.down:
            h = layer(h, emb) if isinstance(layer, ResBlock) else layer(h)
            skips.append(h)
        h = self.mid2(self.mid_attn(self.mid1(h, emb)), emb)
        for layer in self.up:
            if isinstance(layer, ResBlock):
                h = layer(torch.cat([h, skips.pop()], dim=1), emb)
            else:
                h = layer(h)
        out = self.conv_out(F.silu(self.norm_out(h)))
        return out[..., :height, :width]
