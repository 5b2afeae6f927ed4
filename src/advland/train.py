"""One training core for every model: minibatch training on perturbed inputs.

The objective is mean_i loss(model(x_i + delta_i), y_i) where delta_i is the run's
perturbation (perturb.PERTURBATIONS), recomputed at every step: a PGD attack (adv)
or a fresh noise draw (rand). eps = 0 gives standard training, and then `adv` and
`rand` runs are identical. Add-ons (eps schedules, weight perturbations: advland.remedies)
plug into `fit` through `Hook`s instead of copies of the loop; an optimizer with
`needs_closure` (EntropySGD) gets a closure that recomputes the perturbation of the same
clean batch, and the batch gradient, at its current weights.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd
import torch
from torch import nn
from tqdm import tqdm

from advland.core import distributed as dist
from advland.core.config import Run
from advland.core.errors import TrainingDiverged
from advland.core.io import atomic_dir, atomic_outputs, load_checkpoint, save_checkpoint
from advland.core.models import (
    build_model,
    checkpoint_path,
    is_linear,
    per_example_loss,
    predict,
    resolve_device,
)
from advland.core.optim import learning_rate, make_optimizer
from advland.core.perturb import Perturb, make_perturb
from advland.core.rng import rng, seed_global
from advland.core.sections import NoiseConfig, NormAttack, TrainConfig
from advland.data import Dataset
from advland.measure.evaluate import accuracy, objective_value
from advland.measure.perseed import over_seeds
from advland.metrics.train import TrainMetrics
from advland.remedies import remedy_hooks

log = logging.getLogger(__name__)


class Hook:
    """An add-on to the training loop; each method runs at its point of every step.

    epoch_start(epoch) before an epoch's first batch; before_forward(model, x, y)
    with the perturbed batch, before the training forward; after_backward(model)
    after the gradient is computed, before the optimizer step. The defaults do nothing.
    """

    def epoch_start(self, epoch: int) -> None:
        pass

    def before_forward(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
        pass

    def after_backward(self, model: nn.Module) -> None:
        pass


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
    generators: tuple[torch.Generator, ...],
    name: str = "",
    select: Callable[[nn.Module], float] | None = None,
    resume: Path | None = None,
    hooks: Sequence[Hook] = (),
) -> tuple[list[dict], dict | None]:
    """Train in place; returns one row per epoch and the best state by `select`.

    generators[0] orders the data; all of them (the noise's too) are saved in the
    resume checkpoint written every cfg.checkpoint_every epochs, so a resumed run
    equals an uninterrupted one. Under torchrun each rank takes its share of every
    global batch (distributed.local_slice). Stops on a non-finite loss.
    """
    device = next(model.parameters()).device
    net = dist.wrap(model)
    opt = make_optimizer(net.parameters(), cfg.optimizer)
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
    hw = cfg.hardware
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=hw.amp)
    bar = tqdm(
        range(start, cfg.epochs),
        desc=f"train {name}",
        unit="epoch",
        leave=False,
        disable=not dist.is_main(),
    )
    for epoch in bar:
        for hook in hooks:
            hook.epoch_start(epoch)
        model.train()
        order = torch.randperm(n, generator=generators[0])
        loss_sum, correct = 0.0, 0
        for i in range(steps_per_epoch):
            lr = learning_rate(cfg.optimizer, (epoch * steps_per_epoch + i) / total)
            for group in opt.param_groups:
                group["lr"] = lr
            idx = dist.local_slice(order[i * cfg.batch_size : (i + 1) * cfg.batch_size])
            xb, yb = x[idx.to(x.device)].to(device), y[idx.to(y.device)].to(device)
            if cfg.data.augment:
                xb = augment(xb, generators[0])
            if hw.channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            clean = xb
            with autocast:
                xb = perturb(model, xb, yb)  # the attack needs no gradient sync: bare model
                for hook in hooks:
                    hook.before_forward(model, xb, yb)
                logits = net(xb)
                loss = per_example_loss(logits.float(), yb)
            mean = loss.mean()
            if not torch.isfinite(mean):
                raise TrainingDiverged(
                    f"{name}: training loss is {mean.item()} at epoch {epoch + 1}"
                )
            opt.zero_grad(set_to_none=True)
            mean.backward()
            for hook in hooks:
                hook.after_backward(model)
            if getattr(opt, "needs_closure", False):
                opt.step(
                    lambda clean=clean, yb=yb: _batch_gradient(
                        net, model, opt, perturb, clean, yb, autocast
                    )
                )
            else:
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
        if select is not None and ((epoch + 1) % cfg.select.every == 0 or last):
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
        due = resume is not None and every and (epoch + 1) % every == 0 and not last
        if due and dist.is_main():
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


def _batch_gradient(net, model, opt, perturb, x, y, autocast) -> torch.Tensor:
    """The closure of an optimizer that needs one: the batch's perturbation recomputed at
    the current weights, then the mean loss's gradient in .grad."""
    with autocast:
        loss = per_example_loss(net(perturb(model, x, y)).float(), y).mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    return loss


NEAR_CHANCE = 0.1  # failed: clean accuracy below chance + 10% of the way to 100%
MIN_FALL = 0.05  # failed: training objective above 95% of the uniform predictor's log K
PLATEAU_WINDOW = 0.2  # the plateau is judged over the last 20% of the epochs


def training_status(final_loss: float, clean_acc: float, n_classes: int) -> tuple[str, str | None]:
    """("ok", None) or ("failed", reason). A run failed when its clean training accuracy
    is near chance (below c + NEAR_CHANCE (100 - c), c = 100 / K) or its training
    objective did not fall below (1 - MIN_FALL) log K, the loss of the uniform predictor
    (and of logistic regression at w = 0) under any perturbation."""
    reasons = []
    chance = 100 / n_classes
    if clean_acc < chance + NEAR_CHANCE * (100 - chance):
        reasons.append(f"clean training accuracy {clean_acc:.1f}% is near chance ({chance:.0f}%)")
    if final_loss >= (1 - MIN_FALL) * math.log(n_classes):
        reasons.append(
            f"training objective {final_loss:.4f} did not fall below "
            f"{1 - MIN_FALL:.2f} log {n_classes} = {(1 - MIN_FALL) * math.log(n_classes):.4f}"
        )
    return ("failed", "; ".join(reasons)) if reasons else ("ok", None)


def plateau_change(history: list[dict]) -> float:
    """Relative fall of the epoch training loss over the last PLATEAU_WINDOW of the
    epochs, (L[-1-k] - L[-1]) / L[-1] with k = max(1, round(PLATEAU_WINDOW * epochs)):
    near 0 when training has plateaued; nan with a single epoch."""
    if len(history) < 2:
        return float("nan")
    k = min(len(history) - 1, max(1, round(PLATEAU_WINDOW * len(history))))
    last = history[-1]["train_loss"]
    return (history[-1 - k]["train_loss"] - last) / last


def gradient_epochs(cfg: TrainConfig) -> int:
    """Epochs of weight gradients: EntropySGD takes L per step, AWP one more per step from
    its start epoch on; PGD's input gradients are not counted."""
    if cfg.optimizer.entropy is not None:
        return cfg.epochs * cfg.optimizer.entropy.inner_steps
    return cfg.epochs + (max(0, cfg.epochs - cfg.awp.start_epoch) if cfg.awp.gamma > 0 else 0)


def weight_norm(model: nn.Module) -> float:
    """||w||_2 for logistic regression (bias excluded); ||theta||_2 otherwise."""
    if is_linear(model):
        return model.w.norm().item()
    return torch.cat([p.detach().flatten() for p in model.parameters()]).norm().item()


def train_run(
    run: Run,
    data: Dataset,
    cfg: TrainConfig,
    attack: NormAttack,
    noise: NoiseConfig,
    seed: int,
    resume_dir: Path | None = None,
    hooks: Sequence[Hook] = (),
) -> tuple[dict, dict, list[dict]]:
    """Train one seed of a run; returns (checkpoint payload, summary, per-epoch rows).

    The payload's state_dict is the last weights, or with cfg.select.best the weights
    of the epoch with the best PGD accuracy on the first cfg.select.n test images (the
    paper's early stopping); the last weights are kept beside them.
    """
    seed_global(seed)
    generators = (rng(seed, "data_order"), rng(seed, "train_noise"))
    hw = cfg.hardware
    device = resolve_device(hw.device)
    x, y = data.x_train[: cfg.data.n_train], data.y_train[: cfg.data.n_train]
    if device.type == "cuda":  # the whole training set stays on the GPU
        x, y = x.to(device), y.to(device)
    architecture = {
        "model": run.model,
        "shape": list(data.x_train.shape[1:]),
        "n_classes": data.n_classes,
        "width": cfg.model.width,
    }
    model = build_model(run.model, architecture["shape"], data.n_classes, cfg.model.width).to(
        device
    )
    if hw.channels_last:
        model.to(memory_format=torch.channels_last)
    if hw.compile:
        model.forward = torch.compile(model.forward)

    def build(eps: float, step_scale: float = 1.0) -> Perturb:
        train_attack = attack.train
        if step_scale != 1.0 and train_attack.step_size is not None:
            train_attack = train_attack.model_copy(
                update={"step_size": train_attack.step_size * step_scale}
            )
        return make_perturb(
            run.noise, run.norm, eps, train_attack, noise.distribution, generators[1]
        )

    perturb, remedies = remedy_hooks(cfg, run.eps, build)
    select = None
    if cfg.select.best:
        x_sel = data.x_test[: cfg.select.n].to(device)
        y_sel = data.y_test[: cfg.select.n].to(device)
        sel_gen = rng(seed, "select")
        sel_attack = make_perturb(
            "adv", run.norm, run.eps, attack.eval, noise.distribution, sel_gen
        )

        def select(m: nn.Module) -> float:
            return accuracy(m, x_sel, y_sel, sel_attack, cfg.batch_size)

    config = {
        "run": run.model_dump(),
        "train": cfg.model_dump(),
        "attack": attack.model_dump(),
        "noise": noise.model_dump(),
        "seed": seed,
    }
    resume = None
    if resume_dir is not None and cfg.checkpoint_every:
        key = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]
        resume = resume_dir / f"{run.run_id}-{key}.pt"
    name = f"{run.run_id} seed {seed}"
    log.info("%s: training on %d examples for %d epochs on %s", name, len(x), cfg.epochs, device)
    hooks = (*remedies, *hooks)
    history, best = fit(model, x, y, cfg, perturb, generators, name, select, resume, hooks)
    last_state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    if best is not None:
        model.load_state_dict(best["state_dict"])
    final_loss = objective_value(model, x, y, build(run.eps), cfg.batch_size)  # at full eps
    clean_acc = accuracy(model, x, y, None, cfg.batch_size)
    status, reason = training_status(final_loss, clean_acc, data.n_classes)
    summary = {
        "final_train_loss": final_loss,
        "clean_train_acc_final": clean_acc,
        "plateau_change": plateau_change(history),
        "weight_norm": weight_norm(model),
        "epochs": cfg.epochs,
        "gradient_epochs": gradient_epochs(cfg),
        "n_train": len(x),
        "best_epoch": best["epoch"] if best else cfg.epochs,
        "status": status,
    }
    if reason:
        summary["failure"] = reason
        log.warning("%s: training FAILED: %s", name, reason)
    payload = {
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "last_state_dict": last_state,
        "architecture": architecture,
        "run_id": run.run_id,
        "config": config,
        **summary,
    }
    if resume is not None and dist.is_main():
        resume.unlink(missing_ok=True)
    log.info("%s: final training loss %.5f, ||w|| %.4f", name, final_loss, summary["weight_norm"])
    return payload, summary, history


def train_seeds(
    run: Run,
    data: Dataset,
    cfg: TrainConfig,
    attack: NormAttack,
    noise: NoiseConfig,
    seeds: Sequence[int],
    model_dir: Path,
    log_csv: Path,
    resume_dir: Path | None = None,
) -> TrainMetrics:
    """Train every seed of a run in this process. Writes model_dir/seed<k>.pt and one
    CSV of per-epoch rows (with a `seed` column); both appear only when all seeds are
    done. Returns the per-seed summaries and their mean (aggregate.summarize)."""

    def measure(seed: int) -> tuple[dict, tuple[dict, list[dict]]]:
        payload, summary, history = train_run(run, data, cfg, attack, noise, seed, resume_dir)
        return summary, (payload, history)

    summary, results = over_seeds(seeds, measure)
    if dist.is_main():
        with atomic_dir(model_dir) as staging, atomic_outputs(log_csv) as (tmp_csv,):
            for seed, (payload, _) in results.items():
                save_checkpoint(checkpoint_path(staging, seed), payload)
            rows = [{"seed": s, **row} for s, (_, history) in results.items() for row in history]
            pd.DataFrame(rows).to_csv(tmp_csv, index=False)
    return TrainMetrics.model_validate(summary)
