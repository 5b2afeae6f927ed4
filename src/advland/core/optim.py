"""Optimizers by name (OPTIMIZERS) and the learning-rate schedules.

Schedules, at a fraction p in [0, 1) of training: constant lr; cosine
lr (1 + cos(pi p)) / 2; piecewise lr 0.1^(number of milestones <= p). With
`warmup` = w > 0 the rate is first scaled by p / w while p < w (linear warm-up, which
keeps a fresh network from diverging in its first steps at a large rate).
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
    scale = min(1.0, progress / cfg.warmup) if cfg.warmup > 0 else 1.0
    if cfg.schedule == "cosine":
        return scale * cfg.lr * 0.5 * (1 + math.cos(math.pi * progress))
    if cfg.schedule == "piecewise":
        return scale * cfg.lr * 0.1 ** sum(progress >= m for m in cfg.milestones)
    return scale * cfg.lr
