"""One training core for every model: minibatch SGD on perturbed inputs.

The objective is mean_i loss(model(x_i + delta_i), y_i) where delta_i is
- adv:  the PGD attack of the run's norm and eps, recomputed at every step;
- rand: a fresh draw of random noise (noise.random_noise) at every step.
eps = 0 gives standard training, and then `adv` and `rand` runs are identical.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import pandas as pd
import torch
from torch import nn
from tqdm import tqdm

from advland import distributed as dist
from advland.attacks import pgd
from advland.config import NoiseConfig, NormAttack, PGDConfig, RunSpec, TrainConfig
from advland.data import Dataset
from advland.evaluate import accuracy
from advland.io import CheckpointError, atomic_outputs, load_checkpoint, save_checkpoint
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


def resolve_device(name: str) -> torch.device:
    """auto: CUDA when available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def fit(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: TrainConfig,
    perturb: Perturb,
    generators: tuple[torch.Generator, ...],
    name: str = "",
    select: Callable[[nn.Module], float] | None = None,
    resume: Path | None = None,
) -> tuple[list[dict], dict | None]:
    """Train in place; returns one row per epoch and the best state by `select`.

    generators[0] orders the data; all of them (the noise's too) are saved in the
    resume checkpoint written every cfg.checkpoint_every epochs, so a resumed run
    equals an uninterrupted one. Under torchrun each rank takes its share of every
    global batch (distributed.local_slice). Stops on a non-finite loss.
    """
    device = next(model.parameters()).device
    net = dist.wrap(model)
    opt = torch.optim.SGD(
        net.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
    )
    n = len(x)
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    total = cfg.epochs * steps_per_epoch
    start, history, best = 0, [], None
    if resume is not None and resume.is_file():
        state = load_checkpoint(resume)
        model.load_state_dict(state["state_dict"])
        opt.load_state_dict(state["optimizer"])
        for gen, gen_state in zip(generators, state["generators"], strict=True):
            gen.set_state(gen_state)
        torch.set_rng_state(state["torch_rng"])
        start, history, best = state["epoch"], state["history"], state["best"]
        log.info("%s: resuming after epoch %d from %s", name, start, resume)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.amp)
    bar = tqdm(
        range(start, cfg.epochs),
        desc=f"train {name}",
        unit="epoch",
        leave=False,
        disable=not dist.is_main(),
    )
    for epoch in bar:
        model.train()
        order = torch.randperm(n, generator=generators[0])
        loss_sum, correct = 0.0, 0
        for i in range(steps_per_epoch):
            lr = learning_rate(cfg, (epoch * steps_per_epoch + i) / total)
            for group in opt.param_groups:
                group["lr"] = lr
            idx = dist.local_slice(order[i * cfg.batch_size : (i + 1) * cfg.batch_size])
            xb, yb = x[idx.to(x.device)].to(device), y[idx.to(y.device)].to(device)
            if cfg.augment:
                xb = augment(xb, generators[0])
            if cfg.channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            with autocast:
                xb = perturb(model, xb, yb)  # the attack needs no gradient sync: bare model
                logits = net(xb)
                loss = per_example_loss(logits.float(), yb)
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
            "train_loss": dist.sum_over_ranks(loss_sum) / n,
            "train_acc": 100 * dist.sum_over_ranks(correct) / n,
        }
        last = epoch + 1 == cfg.epochs
        if select is not None and ((epoch + 1) % cfg.select_every == 0 or last):
            row["select_score"] = select(model)
            if best is None or row["select_score"] > best["score"]:
                best = {
                    "score": row["select_score"],
                    "epoch": epoch + 1,
                    "state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()},
                }
        history.append(row)
        bar.set_postfix(loss=f"{row['train_loss']:.4f}")
        every = cfg.checkpoint_every
        if (
            resume is not None
            and every
            and (epoch + 1) % every == 0
            and not last
            and dist.is_main()
        ):
            save_checkpoint(
                resume,
                {
                    "state_dict": model.state_dict(),
                    "optimizer": opt.state_dict(),
                    "generators": [g.get_state() for g in generators],
                    "torch_rng": torch.get_rng_state(),
                    "epoch": epoch + 1,
                    "history": history,
                    "best": best,
                },
            )
    return history, best


def weight_norm(model: nn.Module) -> float:
    """||w||_2 for logistic regression (bias excluded); ||theta||_2 otherwise."""
    if hasattr(model, "w"):
        return model.w.norm().item()
    return torch.cat([p.detach().flatten() for p in model.parameters()]).norm().item()


def train_run(
    spec: RunSpec,
    data: Dataset,
    cfg: TrainConfig,
    attack: NormAttack,
    noise: NoiseConfig,
    seed: int,
    checkpoint: Path,
    log_csv: Path,
    resume_dir: Path | None = None,
) -> dict:
    """Train the run's model and write its checkpoint and per-epoch CSV (atomically).

    The checkpoint's state_dict is the last weights, or with cfg.select_best the
    weights of the epoch with the best PGD accuracy on the first cfg.select_n test
    images (the paper's early stopping); the last weights are kept beside them.
    """
    torch.manual_seed(seed)
    generators = (torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed + 1))
    device = resolve_device(cfg.device)
    x, y = data.x_train[: cfg.n_train], data.y_train[: cfg.n_train]
    if device.type == "cuda":  # the whole training set stays on the GPU
        x, y = x.to(device), y.to(device)
    model = model_for(spec.model, data, cfg.width).to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    if cfg.compile:
        model.forward = torch.compile(model.forward)
    perturb = make_perturb(spec, attack.train, noise.distribution, generators[1])
    select = None
    if cfg.select_best:
        x_sel = data.x_test[: cfg.select_n].to(device)
        y_sel = data.y_test[: cfg.select_n].to(device)
        sel_gen = torch.Generator().manual_seed(seed + 5)
        sel_attack = make_perturb(spec.with_noise("adv"), attack.eval, noise.distribution, sel_gen)

        def select(m: nn.Module) -> float:
            return accuracy(m, x_sel, y_sel, sel_attack, cfg.batch_size)

    config = {
        "run": asdict(spec),
        "train": cfg.model_dump(),
        "attack": attack.model_dump(),
        "noise": noise.model_dump(),
        "seed": seed,
    }
    resume = None
    if resume_dir is not None and cfg.checkpoint_every:
        key = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]
        resume = resume_dir / f"{spec.run_id}-{key}.pt"
    log.info(
        "%s: training on %d examples for %d epochs on %s", spec.run_id, len(x), cfg.epochs, device
    )
    history, best = fit(model, x, y, cfg, perturb, generators, spec.run_id, select, resume)
    last_state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    if best is not None:
        model.load_state_dict(best["state_dict"])
    final_loss = objective_value(model, x, y, perturb, cfg.batch_size)
    summary = {
        "final_train_loss": final_loss,
        "weight_norm": weight_norm(model),
        "epochs": cfg.epochs,
        "n_train": len(x),
        "best_epoch": best["epoch"] if best else cfg.epochs,
    }
    if dist.is_main():
        with atomic_outputs(log_csv) as (tmp_csv,):
            pd.DataFrame(history).to_csv(tmp_csv, index=False)
            state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
            save_checkpoint(
                checkpoint,
                {
                    "state_dict": state,
                    "last_state_dict": last_state,
                    "run_id": spec.run_id,
                    "config": config,
                    **summary,
                },
            )
        if resume is not None:
            resume.unlink(missing_ok=True)
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
    device = next(model.parameters()).device
    total = 0.0
    for i in range(0, len(x), batch_size):
        xb, yb = x[i : i + batch_size].to(device), y[i : i + batch_size].to(device)
        total += per_example_loss(model(perturb(model, xb, yb)).float(), yb).sum().item()
    return total / len(x)


def model_for(name: str, data: Dataset, width: int) -> nn.Module:
    """A fresh model for this data: input shape, classes and channel statistics."""
    mean, std = CHANNEL_STATS[data.x_train.shape[1]]
    return build_model(name, tuple(data.x_train.shape[1:]), data.n_classes, width, mean, std)


def load_trained(checkpoint: Path, data: Dataset, device: str = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild a trained model from its checkpoint (loaded with weights_only=True)."""
    payload = load_checkpoint(checkpoint)
    try:
        run, train_cfg = payload["config"]["run"], payload["config"]["train"]
        model = model_for(run["model"], data, train_cfg["width"])
        model.load_state_dict(payload["state_dict"])
    except (KeyError, TypeError, RuntimeError) as err:
        raise CheckpointError(f"{checkpoint}: does not fit this model and data ({err})") from None
    model.eval()
    return model.to(resolve_device(device)), payload
