"""The loop over a run's seeds, written once.

Every per-run stage (train, evaluate, hessian, landscape, fine-tuning) measures each
seed in the order of params `seeds` and reports the metrics over seeds
(aggregate.summarize); what else a seed yields (checkpoints, spectra, curves) comes
back beside them, for the stage to write once every seed is done.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeVar

from advland.measure.aggregate import summarize

T = TypeVar("T")


def over_seeds(
    seeds: Iterable[int], measure: Callable[[int], tuple[dict, T]]
) -> tuple[dict, dict[int, T]]:
    """measure(seed) -> (metrics, outputs) for every seed in order; returns the metrics'
    summary over seeds and {seed: outputs}."""
    metrics: dict[int, dict] = {}
    outputs: dict[int, T] = {}
    for seed in seeds:
        metrics[seed], outputs[seed] = measure(seed)
    return summarize(metrics), outputs
