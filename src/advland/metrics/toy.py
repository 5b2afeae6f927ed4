"""metrics/companion/toy.json: the toy surfaces (advland.studies.toy)."""

from __future__ import annotations

from advland.metrics import Metrics, Real


class Jump(Metrics):
    """||grad(w+) - grad(w-)|| across one axis, of the loss L and of the smoothed F."""

    model: str
    loss: str
    across: str  # "w1=0" or "w2=0"
    jump_loss: Real
    jump_smoothed: Real


class Shortfall(Metrics):
    """PGD's shortfall from the exact adversarial loss over the grid."""

    model: str
    loss: str
    max_shortfall: Real
    share_short: Real  # share of grid points short by more than toy.SHORT


class ToyMetrics(Metrics):
    """The toy stage's file, with the settings the jumps were measured at."""

    jumps: list[Jump]
    pgd: list[Shortfall]
    h: Real  # half the distance between w+ and w-
    gamma: Real  # EntropySGD's coupling
    eps: Real
    seconds: float | None = None
