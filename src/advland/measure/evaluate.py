"""Accuracy: clean, under the run's own training noise, and under PGD; the robust gap.

robust_gap = |robust_train_acc - robust_test_acc| in percentage points, the
quantity in the paper's tables. For random-noise runs the paper's tables look
like accuracy under that random noise, so noise_* accuracies are reported too.
`accuracy` and `objective_value` (the mean training objective) measure a model on a set.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from advland.core.attacks import optimal_linear
from advland.core.config import Run
from advland.core.models import checkpoint_path, is_linear, load_model, per_example_loss, predict
from advland.core.norms import NORMS
from advland.core.perturb import Perturb, make_perturb
from advland.core.rng import rng
from advland.core.sections import AttackConfig, NoiseConfig
from advland.data import Dataset
from advland.measure.perseed import over_seeds
from advland.metrics.evaluate import EvaluateMetrics

log = logging.getLogger(__name__)


@torch.no_grad()
def accuracy(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    perturb: Callable | None = None,
    batch_size: int = 4096,
    desc: str = "",
) -> float:
    """Accuracy in % on (perturbed) inputs, in batches."""
    model.eval()
    device = next(model.parameters()).device
    correct = 0
    for i in tqdm(range(0, len(x), batch_size), desc=desc, leave=False, disable=not desc):
        xb, yb = x[i : i + batch_size].to(device), y[i : i + batch_size].to(device)
        if perturb is not None:
            xb = perturb(model, xb, yb)
        correct += (predict(model(xb)) == yb).sum().item()
    return 100.0 * correct / len(x)


@torch.no_grad()
def objective_value(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, perturb: Perturb, batch_size: int = 4096
) -> float:
    """Mean training objective (loss on perturbed inputs) over a whole set."""
    model.eval()
    device = next(model.parameters()).device
    total = 0.0
    for i in range(0, len(x), batch_size):
        xb, yb = x[i : i + batch_size].to(device), y[i : i + batch_size].to(device)
        total += per_example_loss(model(perturb(model, xb, yb)).float(), yb).sum().item()
    return total / len(x)


def evaluate_run(
    model: nn.Module,
    run: Run,
    data: Dataset,
    attack: AttackConfig,
    noise: NoiseConfig,
    seed: int,
    batch_size: int,
) -> dict[str, float]:
    """All accuracies of one trained model; the attack uses the evaluation settings."""
    gen = rng(seed, "evaluate")
    attack_fn = make_perturb("adv", run.norm, run.eps, attack, noise.distribution, gen)
    noise_fn = make_perturb("rand", run.norm, run.eps, attack, noise.distribution, gen)
    out: dict[str, float] = {"eps": run.eps}
    for split in ("train", "test"):
        x, y = getattr(data, f"x_{split}"), getattr(data, f"y_{split}")
        out[f"clean_{split}_acc"] = accuracy(model, x, y, None, batch_size)
        out[f"robust_{split}_acc"] = accuracy(model, x, y, attack_fn, batch_size, f"PGD {split}")
        out[f"noise_{split}_acc"] = accuracy(model, x, y, noise_fn, batch_size)
    kinds = ["clean", "robust", "noise"]
    if is_linear(model):  # the exact worst case, to check PGD against
        out |= closed_form_check(model, run, data, attack_fn, batch_size)
        kinds.append("cf_robust")
    for kind in kinds:
        out[f"{kind}_gap"] = abs(out[f"{kind}_train_acc"] - out[f"{kind}_test_acc"])
    log.info(
        "%s seed %d: robust train %.2f test %.2f gap %.2f",
        run.run_id,
        seed,
        out["robust_train_acc"],
        out["robust_test_acc"],
        out["robust_gap"],
    )
    return out


@torch.no_grad()
def closed_form_check(
    model: nn.Module, run: Run, data: Dataset, attack_fn: Callable, batch_size: int
) -> dict[str, float]:
    """Accuracy under the closed-form attack (with the box where it stays exact: Linf)
    and, where that attack is PGD's exact optimum, max |x_pgd - x_cf| on the test set."""
    exact_in_box = NORMS[run.norm].exact_linear_box
    box = (0.0, 1.0) if exact_in_box else None

    def cf_fn(m, x, y):
        return optimal_linear(x, y, m.w, run.norm, run.eps, box)

    out = {
        f"cf_robust_{s}_acc": accuracy(
            model, getattr(data, f"x_{s}"), getattr(data, f"y_{s}"), cf_fn, batch_size
        )
        for s in ("train", "test")
    }
    if exact_in_box:
        x, y = data.x_test, data.y_test
        out["pgd_cf_max_abs_dev"] = max(
            (
                attack_fn(model, x[i : i + batch_size], y[i : i + batch_size])
                - cf_fn(model, x[i : i + batch_size], y[i : i + batch_size])
            )
            .abs()
            .max()
            .item()
            for i in range(0, len(x), batch_size)
        )
    return out


def evaluate_seeds(
    run: Run,
    data: Dataset,
    seeds: list[int],
    model_dir: Path,
    attack: AttackConfig,
    noise: NoiseConfig,
    cfg,
    device: str,
) -> EvaluateMetrics:
    """evaluate_run for every seed of a run, on the first cfg.n_train training examples
    it was trained on and the first cfg.n_test test examples; returns the per-seed
    accuracies and their mean (aggregate.summarize)."""

    def measure(seed: int) -> tuple[dict, None]:
        model, checkpoint = load_model(checkpoint_path(model_dir, seed), device)
        seen = data.seen(checkpoint["n_train"], cfg.n_train, cfg.n_test)
        return evaluate_run(model, run, seen, attack, noise, seed, cfg.batch_size), None

    return EvaluateMetrics.model_validate(over_seeds(seeds, measure)[0])
