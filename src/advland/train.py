"""One training core for every model: minibatch SGD on perturbed inputs.

The objective is mean_i loss(model(x_i + delta_i), y_i) where delta_i is
- adv:  the PGD attack of the run's norm and eps, recomputed at every step;
- rand: a fresh draw of random noise (noise.random_noise) at every step.
eps = 0 gives standard training, and then `adv` and `rand` runs are identical.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import pandas as pd
import torch
from torch import nn
from tqdm import tqdm

from advland.attacks import pgd
from advland.config import NoiseConfig, PGDConfig, RunSpec, TrainConfig
from advland.data import Dataset
from advland.io import atomic_outputs, save_checkpoint
from advland.models import build_model, per_example_loss, predict
from advland.noise import random_noise

log = logging.getLogger(__name__)

Perturb = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]
# Standardization inside ResNet18 (Madry et al.'s per-channel statistics for CIFAR10).
CHANNEL_STATS = {
    3: ((0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616)),
    1: ((0.5,), (0.5,)),
}


def make_perturb(
    spec: RunSpec, attack: PGDConfig, distribution: str, generator: torch.Generator
) -> Perturb:
    """The run's training perturbation as a function (model, x, y) -> x'."""
    if spec.noise == "adv":
        step = attack.step(spec.eps)
        return lambda model, x, y: pgd(
            model,
            x,
            y,
            spec.norm,
            spec.eps,
            attack.steps,
            step,
            attack.random_start,
            generator=generator,
        )
    return lambda model, x, y: random_noise(x, spec.norm, spec.eps, distribution, generator)


def learning_rate(cfg: TrainConfig, progress: float) -> float:
    """lr at a fraction `progress` in [0,1) of training."""
    if cfg.schedule == "cosine":
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * progress))
    if cfg.schedule == "piecewise":
        return cfg.lr * 0.1 ** sum(progress >= m for m in cfg.milestones)
    return cfg.lr


def augment(x: torch.Tensor, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random crop (zero padding `pad`) and horizontal flip, on a batch tensor."""
    n, c, h, w = x.shape
    padded = nn.functional.pad(x, (pad, pad, pad, pad))
    oy, ox = (torch.randint(0, 2 * pad + 1, (2, n), generator=generator)).to(x.device)
    rows = (oy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
    cols = (ox[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
    out = padded[
        torch.arange(n, device=x.device)[:, None, None, None],
        torch.arange(c, device=x.device)[None, :, None, None],
        rows,
        cols,
    ]
    flip = (torch.rand(n, generator=generator) < 0.5).to(x.device).view(-1, 1, 1, 1)
    return torch.where(flip, out.flip(3), out)


def fit(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: TrainConfig,
    perturb: Perturb,
    generator: torch.Generator,
    name: str = "",
) -> list[dict]:
    """Train in place; returns one row per epoch. Stops on a non-finite loss."""
    opt = torch.optim.SGD(
        model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
    )
    n = len(x)
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    total = cfg.epochs * steps_per_epoch
    history = []
    bar = tqdm(range(cfg.epochs), desc=f"train {name}", unit="epoch", leave=False)
    for epoch in bar:
        model.train()
        order = torch.randperm(n, generator=generator)
        loss_sum, correct = 0.0, 0
        for i in range(steps_per_epoch):
            lr = learning_rate(cfg, (epoch * steps_per_epoch + i) / total)
            for group in opt.param_groups:
                group["lr"] = lr
            idx = order[i * cfg.batch_size : (i + 1) * cfg.batch_size]
            xb, yb = x[idx], y[idx]
            if cfg.augment:
                xb = augment(xb, generator)
            xb = perturb(model, xb, yb)
            logits = model(xb)
            loss = per_example_loss(logits, yb)
            mean = loss.mean()
            if not torch.isfinite(mean):
                raise FloatingPointError(
                    f"{name}: training loss is {mean.item()} at epoch {epoch + 1}"
                )
            opt.zero_grad(set_to_none=True)
            mean.backward()
            opt.step()
            loss_sum += loss.sum().item()
            correct += (predict(logits.detach()) == yb).sum().item()
        row = {
            "epoch": epoch + 1,
            "lr": lr,
            "train_loss": loss_sum / n,
            "train_acc": 100 * correct / n,
        }
        history.append(row)
        bar.set_postfix(loss=f"{row['train_loss']:.4f}")
    return history


def weight_norm(model: nn.Module) -> float:
    """||w||_2 for logistic regression (bias excluded); ||theta||_2 otherwise."""
    if hasattr(model, "w"):
        return model.w.norm().item()
    return torch.cat([p.detach().flatten() for p in model.parameters()]).norm().item()


def train_run(
    spec: RunSpec,
    data: Dataset,
    cfg: TrainConfig,
    attack: PGDConfig,
    noise: NoiseConfig,
    seed: int,
    checkpoint: Path,
    log_csv: Path,
) -> dict:
    """Train the run's model and write its checkpoint and per-epoch CSV (atomically)."""
    torch.manual_seed(seed)
    data_gen = torch.Generator().manual_seed(seed)
    noise_gen = torch.Generator().manual_seed(seed + 1)
    x, y = data.x_train[: cfg.n_train], data.y_train[: cfg.n_train]
    mean, std = CHANNEL_STATS[x.shape[1]]
    model = build_model(spec.model, tuple(x.shape[1:]), data.n_classes, cfg.width, mean, std)
    perturb = make_perturb(spec, attack, noise.distribution, noise_gen)
    log.info("%s: training on %d examples for %d epochs", spec.run_id, len(x), cfg.epochs)
    history = fit(model, x, y, cfg, perturb, data_gen, spec.run_id)
    final_loss = objective_value(model, x, y, perturb, cfg.batch_size)
    summary = {
        "final_train_loss": final_loss,
        "weight_norm": weight_norm(model),
        "epochs": cfg.epochs,
        "n_train": len(x),
    }
    config = {
        "run": asdict(spec),
        "train": cfg.model_dump(),
        "attack": attack.model_dump(),
        "noise": noise.model_dump(),
        "seed": seed,
    }
    with atomic_outputs(log_csv) as (tmp_csv,):
        pd.DataFrame(history).to_csv(tmp_csv, index=False)
        save_checkpoint(
            checkpoint,
            {"state_dict": model.state_dict(), "run_id": spec.run_id, "config": config, **summary},
        )
    log.info(
        "%s: final training loss %.5f, ||w|| %.4f", spec.run_id, final_loss, summary["weight_norm"]
    )
    return summary


@torch.no_grad()
def objective_value(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, perturb: Perturb, batch_size: int = 4096
) -> float:
    """Mean training objective (loss on perturbed inputs) over a whole set."""
    model.eval()
    total = 0.0
    for i in range(0, len(x), batch_size):
        xb, yb = x[i : i + batch_size], y[i : i + batch_size]
        total += per_example_loss(model(perturb(model, xb, yb)), yb).sum().item()
    return total / len(x)


def load_trained(checkpoint: Path, data: Dataset) -> tuple[nn.Module, dict]:
    """Rebuild a trained model from its checkpoint (loaded with weights_only=True)."""
    from advland.io import CheckpointError, load_checkpoint

    payload = load_checkpoint(checkpoint)
    try:
        run, train_cfg = payload["config"]["run"], payload["config"]["train"]
        mean, std = CHANNEL_STATS[data.x_train.shape[1]]
        model = build_model(
            run["model"],
            tuple(data.x_train.shape[1:]),
            data.n_classes,
            train_cfg["width"],
            mean,
            std,
        )
        model.load_state_dict(payload["state_dict"])
    except (KeyError, TypeError, RuntimeError) as err:
        raise CheckpointError(f"{checkpoint}: does not fit this model and data ({err})") from None
    model.eval()
    return model, payload
