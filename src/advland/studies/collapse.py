"""Liu et al. (2020): adversarial training of a linear model collapses to w = 0 at large eps.

For each attack norm (Linf, L2) with and without the [0,1] pixel box, logistic
regression is trained (train.fit, the one training core) on the exact worst case
(attacks.optimal_linear: L2 without the box, Linf with or without it) or on PGD (L2
with the box), at eps = factor x eps_ref with eps_ref = theory.collapse_eps (exact, or a
lower bound for L2 with the box). If nothing collapses, eps doubles (max_doublings
times); then `bisect` halvings between the largest eps that kept w and the smallest that
collapsed. A model has collapsed when ||w||_2 <= w_tol; the measured collapse eps is the
smallest collapsed eps found, and the bracket below it is reported.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import torch
from pydantic import Field, NonNegativeInt, PositiveFloat

from advland.core.attacks import optimal_linear, pgd
from advland.core.config import Params
from advland.core.io import write_csv
from advland.core.models import build_model, per_example_loss
from advland.core.perturb import Perturb
from advland.core.rng import rng, seed_global
from advland.core.sections import AttackConfig, Strict, TrainConfig
from advland.data import Dataset
from advland.measure.evaluate import accuracy
from advland.measure.theory import collapse_eps
from advland.metrics.collapse import CollapseMetrics
from advland.train import fit

log = logging.getLogger(__name__)
BOX = (0.0, 1.0)
CASES = (("linf", False), ("linf", True), ("l2", False), ("l2", True))


class CollapseConfig(Strict):
    """Liu et al.'s collapse to w = 0: logistic regression trained at eps = factor x the
    predicted threshold (theory.collapse_eps), then bisection between the largest eps
    that kept w and the smallest that collapsed (||w||_2 <= w_tol)."""

    factors: list[PositiveFloat] = Field(min_length=1)
    bisect: NonNegativeInt
    max_doublings: NonNegativeInt  # grow eps x2 while nothing collapsed
    w_tol: PositiveFloat
    train: TrainConfig
    pgd: AttackConfig  # L2 with the box, which has no closed form (train and evaluate)
    seed: int


def collapse_config(params: Params, dataset: str) -> CollapseConfig:
    """companion.linear.<dataset>.collapse, validated."""
    return params.section(f"companion.linear.{dataset}.collapse", CollapseConfig)


def worst_case(norm: str, eps: float, box: bool, cfg: CollapseConfig, gen) -> Perturb:
    """The exact attack where a closed form exists, else PGD (L2 with the box)."""
    if norm == "l2" and box:
        step = cfg.pgd.step(eps)
        return lambda m, x, y: pgd(
            m, x, y, "l2", eps, cfg.pgd.steps, step, cfg.pgd.random_start, BOX, gen
        )
    return lambda m, x, y: optimal_linear(x, y, m.w.detach(), norm, eps, BOX if box else None)


def train_at(data: Dataset, norm: str, eps: float, box: bool, cfg: CollapseConfig) -> dict:
    """Train one model at eps; its ||w||, bias, objective, clean and robust train accuracy."""
    seed_global(cfg.seed)
    gens = (rng(cfg.seed, "data_order"), rng(cfg.seed, "train_noise"))
    x, y = data.x_train[: cfg.train.data.n_train], data.y_train[: cfg.train.data.n_train]
    model = build_model("lr", tuple(x.shape[1:]), 2)
    attack = worst_case(norm, eps, box, cfg, gens[1])
    history, _ = fit(model, x, y, cfg.train, attack, gens, f"{norm} box={box} eps={eps:.4g}")
    with torch.no_grad():
        objective = per_example_loss(model(attack(model, x, y)), y).mean().item()
    w_norm = model.w.norm().item()
    return {
        "norm": norm,
        "box": box,
        "eps": eps,
        "w_norm": w_norm,
        "bias": model.b.item(),
        "objective": objective,
        "clean_acc": accuracy(model, x, y),
        "robust_acc": accuracy(model, x, y, attack),
        "collapsed": w_norm <= cfg.w_tol,
    }


def search(data: Dataset, norm: str, box: bool, cfg: CollapseConfig, eps_ref: float) -> list:
    """Grid of factors x eps_ref, doubling until a collapse, then bisection."""
    rows = [train_at(data, norm, f * eps_ref, box, cfg) for f in sorted(cfg.factors)]
    for _ in range(cfg.max_doublings):
        if any(r["collapsed"] for r in rows):
            break
        rows.append(train_at(data, norm, 2 * rows[-1]["eps"], box, cfg))
    for _ in range(cfg.bisect):
        hi = min((r["eps"] for r in rows if r["collapsed"]), default=None)
        lo = max(
            (r["eps"] for r in rows if not r["collapsed"] and (hi is None or r["eps"] < hi)),
            default=None,
        )
        if hi is None or lo is None:
            break
        rows.append(train_at(data, norm, (lo + hi) / 2, box, cfg))
    return rows


def collapse_study(data: Dataset, cfg: CollapseConfig, table: Path) -> CollapseMetrics:
    """Write every trained model (one row each) to `table`; return, per case, the
    predicted and measured collapse eps."""
    x, y = data.x_train[: cfg.train.data.n_train], data.y_train[: cfg.train.data.n_train]
    rows, summary = [], {}
    for norm, box in CASES:
        eps_ref, exact = collapse_eps(x, y, norm, BOX if box else None)
        found = search(data, norm, box, cfg, eps_ref)
        rows += found
        collapsed = [r["eps"] for r in found if r["collapsed"]]
        measured = min(collapsed, default=None)  # None: no collapse found
        kept = [r["eps"] for r in found if not r["collapsed"]]
        kept = [e for e in kept if measured is None or e < measured]
        case = f"{norm}_{'box' if box else 'nobox'}"
        summary[case] = {
            "predicted": eps_ref,
            "exact": exact,
            "measured": measured,
            "bracket_lo": max(kept, default=None),
            "majority_acc": 100 * max(y.float().mean().item(), 1 - y.float().mean().item()),
        }
        log.info("%s: predicted %.4f (exact %s), measured %s", case, eps_ref, exact, measured)
    write_csv(table, pd.DataFrame(rows))
    return CollapseMetrics.model_validate(summary)
