"""metrics/train/<run_id>.json: one run's training, per seed (advland.train)."""

from __future__ import annotations

from typing import Literal

from advland.metrics import Metrics, Real, Seeds


class TrainSeed(Metrics):
    """One seed's training, measured at the final (or the selected best) weights."""

    final_train_loss: Real  # training objective at the run's eps, mean over examples
    clean_train_acc_final: Real  # clean training accuracy, %
    plateau_change: Real  # relative fall of the epoch loss over the last epochs (nan: 1 epoch)
    weight_norm: Real  # ||w||_2 (logistic regression: bias excluded; else all parameters)
    epochs: int
    gradient_epochs: int  # epochs of weight gradients (EntropySGD: x inner steps; AWP: +1)
    n_train: int  # training examples
    best_epoch: int  # the kept epoch (1-based; = epochs without selection)
    status: Literal["ok", "failed"]
    failure: str | None = None  # why, when status is failed


class TrainMetrics(Seeds[TrainSeed]):
    """The train stage's file."""
