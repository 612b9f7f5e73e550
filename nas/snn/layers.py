"""Shared layers of the model zoo."""

from __future__ import annotations

import torch
from torch import nn


class Matmul(nn.Module):
    """``a @ b`` as a module, so that hooks (the energy meter, binary-input checks) can see
    products between two activations, e.g. the spike x real products inside DSSA."""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.matmul(a, b)
