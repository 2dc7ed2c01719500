"""A LLaMA-7B-shaped decoder-only transformer (d=4096, 32 layers, 32 heads, SwiGLU 11008, vocab 32000;
6.74 B parameters), built on the meta device for the engine benchmark — never materialised."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class LowRank(nn.Module):
    """A LoRA-like adapter beside a frozen projection: x W^T + (x A^T) B^T."""

    def __init__(self, base: nn.Linear, rank: int):
        super().__init__()
        self.base = base.requires_grad_(False)
        self.a = nn.Linear(base.in_features, rank, bias=False)
        self.b = nn.Linear(rank, base.out_features, bias=False)

    def forward(self, x):
        return self.base(x) + self.b(self.a(x))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, hidden: int, lora_rank: int = 0):
        super().__init__()
        self.heads = heads
        self.attn_norm, self.mlp_norm = RMSNorm(dim), RMSNorm(dim)
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim, bias=False) for _ in range(4))

        self.gate, self.up = nn.Linear(dim, hidden, bias=False), nn.Linear(dim, hidden, bias=False)
        self.down = nn.Linear(hidden, dim, bias=False)
        if lora_rank:   # a frozen base (its norms too) with adapters on the query and value projections
            self.requires_grad_(False)
            self.q, self.v = LowRank(self.q, lora_rank), LowRank(self.v, lora_rank)

    def forward(self, x):
        b, s, d = x.shape
        h = self.attn_norm(x)
        q, k, v = (proj(h).view(b, s, self.heads, d // self.heads).transpose(1, 2) for proj in (self.q, self.k, self.v))
        attn = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, s, d)
        x = x + self.o(attn)
        h = self.mlp_norm(x)
        return x + self.down(F.silu(self.gate(h)) * self.up(h))


class Decoder(nn.Module):
    def __init__(self, vocab: int = 32000, dim: int = 4096, layers: int = 32, heads: int = 32, hidden: int = 11008,
                 lora_rank: int = 0):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.blocks = nn.ModuleList(Block(dim, heads, hidden, lora_rank) for _ in range(layers))
        self.norm = RMSNorm(dim)
        self.lm_head = nn.Linear(dim, vocab, bias=False)
        if lora_rank:
            self.embed.requires_grad_(False), self.norm.requires_grad_(False), self.lm_head.requires_grad_(False)

    def forward(self, tokens):
        x = self.embed(tokens)
        for block in self.blocks:
            x = block(x)
        return self.lm_head(self.norm(x))


def build_on_meta() -> Decoder:
    with torch.device("meta"):
        return Decoder()


def expected_forward_macs(batch: int, seq: int, vocab=32000, dim=4096, layers=32, hidden=11008) -> int:
    """Closed form: 4 d² projections + 3 d·hidden MLP per token and layer, Q·Kᵀ and P·V (full, causal
    counted as full) per layer, the LM head per token."""
    tokens = batch * seq
    per_layer = tokens * (4 * dim * dim + 3 * dim * hidden) + 2 * batch * seq * seq * dim
    return layers * per_layer + tokens * dim * vocab
