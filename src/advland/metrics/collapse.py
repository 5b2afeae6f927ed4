"""metrics/companion/collapse/<dataset>.json: the collapse study (advland.studies.collapse)."""

from __future__ import annotations

from advland.metrics import Metrics, Real


class CollapseCase(Metrics):
    """One norm, with or without the [0, 1] box: the eps at which adversarially trained
    logistic regression collapses to w = 0."""

    predicted: Real  # theory.collapse_eps
    exact: bool  # whether that prediction is exact (else a bound)
    measured: Real | None  # the smallest trained eps that collapsed (None: none did)
    bracket_lo: Real | None  # the largest trained eps below it that kept w
    majority_acc: Real  # accuracy of the collapsed model (the majority class), %


class CollapseMetrics(Metrics):
    """The collapse stage's file: one case per norm and box setting (collapse.CASES)."""

    linf_nobox: CollapseCase
    linf_box: CollapseCase
    l2_nobox: CollapseCase
    l2_box: CollapseCase
    seconds: float | None = None
