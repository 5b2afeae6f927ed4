"""metrics/landscape/<run_id>.json: one run's 1D loss curves, per seed (advland.measure.landscape).

Along a filter-normalized random direction, and (eigen_*) along the Hessian's top
eigenvector when the run has eigen landscapes."""

from __future__ import annotations

from advland.metrics import Metrics, Real, Seeds


class LandscapeSeed(Metrics):
    """One seed's curve summaries (landscape.curve_summary) of the training objective."""

    curvature_1d: Real  # (L(h) - 2 L(0) + L(-h)) / h^2 at alpha = 0, h the grid step
    rise_1d: Real  # mean(L(-alpha), L(alpha)) - L(0)
    centre_loss: Real  # L(0)
    eigen_curvature_1d: Real | None = None
    eigen_rise_1d: Real | None = None
    eigen_centre_loss: Real | None = None


class LandscapeMetrics(Seeds[LandscapeSeed]):
    """The landscape stage's file."""
