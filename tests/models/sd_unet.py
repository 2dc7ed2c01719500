"""A Stable-Diffusion-style conditional UNet, small, with the interface of diffusers' ``UNet2DConditionModel``:
``forward(sample, timestep, encoder_hidden_states)`` and a ``config`` carrying ``in_channels``, ``sample_size``
and ``cross_attention_dim`` (diffusers' names). TorchBudget derives its default inputs from exactly those names
(engine.hf.default_inputs): sample 1 x in_channels x sample_size², timestep (1,), encoder_hidden_states
1 x 77 x cross_attention_dim. diffusers itself is not a dependency: this file stands in for it in the tests."""
from __future__ import annotations

import math
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn


def timestep_embedding(timestep: torch.Tensor, dim: int) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=timestep.device) / half)
    angles = timestep.float()[:, None] * freqs[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


class ResBlock(nn.Module):
    def __init__(self, channels: int, time_dim: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(8, channels)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.time = nn.Linear(time_dim, channels)
        self.norm2 = nn.GroupNorm(8, channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x, t):
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.time(F.silu(t))[:, :, None, None]
        return x + self.conv2(F.silu(self.norm2(h)))


class CrossAttention(nn.Module):
    def __init__(self, channels: int, context_dim: int, heads: int = 4):
        super().__init__()
        self.heads = heads
        self.norm = nn.GroupNorm(8, channels)
        self.q = nn.Linear(channels, channels, bias=False)
        self.k = nn.Linear(context_dim, channels, bias=False)
        self.v = nn.Linear(context_dim, channels, bias=False)
        self.out = nn.Linear(channels, channels)

    def forward(self, x, context):
        b, c, h, w = x.shape
        tokens = self.norm(x).flatten(2).transpose(1, 2)                        # b, hw, c
        q = self.q(tokens).view(b, h * w, self.heads, c // self.heads).transpose(1, 2)
        k = self.k(context).view(b, -1, self.heads, c // self.heads).transpose(1, 2)
        v = self.v(context).view(b, -1, self.heads, c // self.heads).transpose(1, 2)
        attended = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, h * w, c)
        return x + self.out(attended).transpose(1, 2).view(b, c, h, w)


class TinyUNet2DCondition(nn.Module):
    def __init__(self, in_channels: int = 4, sample_size: int = 32, cross_attention_dim: int = 64,
                 channels: int = 32):
        super().__init__()
        self.config = SimpleNamespace(in_channels=in_channels, out_channels=in_channels, sample_size=sample_size,
                                      cross_attention_dim=cross_attention_dim)
        time_dim = channels * 4
        self.time_embedding = nn.Sequential(nn.Linear(channels, time_dim), nn.SiLU(), nn.Linear(time_dim, time_dim))
        self.channels = channels
        self.conv_in = nn.Conv2d(in_channels, channels, 3, padding=1)
        self.down = ResBlock(channels, time_dim)
        self.down_attn = CrossAttention(channels, cross_attention_dim)
        self.downsample = nn.Conv2d(channels, channels, 3, stride=2, padding=1)
        self.mid = ResBlock(channels, time_dim)
        self.mid_attn = CrossAttention(channels, cross_attention_dim)
        self.upsample = nn.ConvTranspose2d(channels, channels, 4, stride=2, padding=1)
        self.up = ResBlock(channels, time_dim)
        self.norm_out = nn.GroupNorm(8, channels)
        self.conv_out = nn.Conv2d(channels, in_channels, 3, padding=1)

    def forward(self, sample, timestep, encoder_hidden_states):
        t = self.time_embedding(timestep_embedding(timestep, self.channels))
        x = self.conv_in(sample)
        skip = self.down_attn(self.down(x, t), encoder_hidden_states)
        x = self.mid_attn(self.mid(self.downsample(skip), t), encoder_hidden_states)
        x = self.up(self.upsample(x) + skip, t)
        return self.conv_out(F.silu(self.norm_out(x)))
