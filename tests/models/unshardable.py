"""A model FSDP2 cannot wrap: fully_shard shards dim 0, and a scalar (0-d) parameter has none."""
import torch
from torch import nn


class ScalarGate(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(4, 4)
        self.gate = nn.Parameter(torch.ones(()))

    def forward(self, x):
        return self.proj(x) * self.gate
