"""Losses that hang, for the harness's time limit and interruption tests (imported by the
command under test: ``tests.gessl.testing.slow_losses:...``)."""

from __future__ import annotations

import time
from typing import ClassVar

import torch

CALLS = {"n": 0}


def hangs_on_wide_inputs(z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """A mean squared distance that never returns when the feature dimension is above 4."""
    if z1.shape[1] > 4:
        while True:  # pure Python: the time limit interrupts it
            pass
    return ((z1 - z2) ** 2).sum(-1).mean()


def hangs_after_a_while(z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """The same distance, sleeping for minutes from its 11th call on (only an interruption, or
    the time limit, ends it): ``finite`` with 8 examples makes 8 calls, ``rotation`` 16."""
    CALLS["n"] += 1
    if CALLS["n"] > 10:
        time.sleep(600)
    return ((z1 - z2) ** 2).sum(-1).mean()


class ScaledAlignment(torch.nn.Module):
    """A loss *class*: ``scale · mean ‖z1 − z2‖² / temperature``; every construction is
    recorded (class attribute ``built``)."""

    built: ClassVar[list[dict]] = []

    def __init__(self, temperature: float = 1.0, scale: float = 1.0) -> None:
        super().__init__()
        ScaledAlignment.built.append({"temperature": temperature, "scale": scale})
        self.temperature, self.scale = temperature, scale

    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        return self.scale * ((z1 - z2) ** 2).sum(-1).mean() / self.temperature
