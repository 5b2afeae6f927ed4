"""Optimizers by name (OPTIMIZERS) and the learning-rate schedules.

Schedules, at a fraction p in [0, 1) of training: constant lr; cosine
lr (1 + cos(pi p)) / 2; piecewise lr 0.1^(number of milestones <= p).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from advland.core.errors import Registry

OPTIMIZERS: Registry = Registry("optimizer")


@OPTIMIZERS.register("sgd")
def sgd(params: Iterable[torch.nn.Parameter], cfg) -> torch.optim.Optimizer:
    """SGD with (heavy-ball) momentum and L2 weight decay."""
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def make_optimizer(params: Iterable[torch.nn.Parameter], cfg) -> torch.optim.Optimizer:
    """The optimizer named by cfg.name (a config.OptimizerConfig)."""
    return OPTIMIZERS[cfg.name](params, cfg)


def learning_rate(cfg, progress: float) -> float:
    """lr at a fraction `progress` in [0,1) of training (see the module doc)."""
    if cfg.schedule == "cosine":
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * progress))
    if cfg.schedule == "piecewise":
        return cfg.lr * 0.1 ** sum(progress >= m for m in cfg.milestones)
    return cfg.lr
