"""metrics/companion/smoothness/<dataset>.json: the smoothness study (advland.studies.smoothness)."""

from __future__ import annotations

from advland.metrics import Metrics, Real


class Ratios(Metrics):
    """Median over directions of ||grad L(w + r u) - grad L(w)|| / r, per radius r."""

    ratio_smallest: Real  # at the smallest radius
    ratio_settle: Real  # at the radius nearest smoothness.SETTLE_AT
    growth: Real  # ratio_smallest / ratio_settle: >> 1 where the gradient jumps
    radius_smallest: Real


class Points(Metrics):
    """One objective at its trained weights, and with one coordinate moved to +tiny."""

    trained: Ratios
    sign_change: Ratios


class SmoothnessMetrics(Metrics):
    """The smoothness stage's file, per objective (smoothness.OBJECTIVES)."""

    standard: Points
    l2: Points
    linf: Points
    seconds: float | None = None
