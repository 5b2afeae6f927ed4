"""Adversarial fine-tuning (Xu, Yap & Prabhu 2019): sharpness of fine-tuned landscapes.

A clean model (eps 0) is fine-tuned, once per attack A, on the 1:1 set
{(x_i, y_i)} + {(A(x_i), y_i)}: one adversarial example per training image, made once
against the clean model and then fixed. Training is `train.fit` with the identity as its
perturbation, from the clean weights. Then, for the clean model and each fine-tuned one:
accuracy on clean test images and under every attack (run against that model), the
Hessian's top eigenvalues and trace (`hessian.sharpness_run`) and a filter-normalized 1D
curve and 2D surface (`landscape.landscape_run`), both of the clean training loss on the
same first images, so that every model is measured on one function of its weights;
and 1 - SSIM between each test image and its adversarial version against the clean model
(pytorch_msssim: 11x11 gaussian window, sigma 1.5, data range 1, the valid region as in
scikit-image's gaussian_weights=True, use_sample_covariance=False).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import pandas as pd
import torch
from pydantic import Field, PositiveFloat, PositiveInt, field_validator, model_validator
from pytorch_msssim import ssim
from torch import nn
from tqdm import tqdm

from advland.core.config import Params, Run
from advland.core.datasets import DatasetName
from advland.core.errors import ParamsError
from advland.core.io import atomic_dir, atomic_outputs, save_checkpoint
from advland.core.models import checkpoint_path, load_model
from advland.core.norms import NORMS
from advland.core.perturb import ATTACKS, Perturb
from advland.core.rng import rng, seed_global
from advland.core.sections import (
    TAG,
    AttackConfig,
    HessianConfig,
    Strict,
    TrainConfig,
    odd_points,
    parse_eps,
)
from advland.data import Dataset
from advland.measure.evaluate import accuracy
from advland.measure.hessian import sharpness_run
from advland.measure.landscape import landscape_run, partial_path
from advland.measure.perseed import over_seeds
from advland.metrics.finetune import CLEAN, FinetuneEvalMetrics, FinetuneMetrics
from advland.sources import file_digest
from advland.train import fit, weight_norm

log = logging.getLogger(__name__)
WINDOW = 11  # SSIM's gaussian window: sigma 1.5, truncated at 3.5 sigma as in scikit-image


class FinetuneAttack(Strict):
    """One attack of the fine-tuning study: it makes one fine-tuning set and is one column
    of the evaluation matrix. eps is the norm ball's radius (stadv has none: 0)."""

    norm: str = "linf"
    eps: float = 0.0
    attack: AttackConfig

    _eps = field_validator("eps", mode="before")(parse_eps)

    @field_validator("norm")
    @classmethod
    def _norm(cls, v: str) -> str:
        return NORMS.check(v)

    @model_validator(mode="after")
    def _radius(self) -> FinetuneAttack:
        if (self.attack.name == "stadv") != (self.eps == 0):
            raise ValueError("eps must be 0 for stadv (it has no ball) and > 0 for the others")
        return self


class FinetuneLandscape(Strict):
    """Filter-normalized 1D curve and 2D surface of the clean training loss (landscape_run)."""

    alpha: PositiveFloat
    points_1d: Annotated[int, Field(ge=3)]
    points_2d: Annotated[int, Field(ge=3)]
    direction_seed: int
    include_bias: bool
    n_train: PositiveInt

    _odd = field_validator("points_1d")(odd_points)


class FinetuneConfig(Strict):
    """Xu, Yap & Prabhu (2019): the clean model `source` (a run with eps 0 on `dataset`)
    fine-tuned on its first n_train training images plus one adversarial copy of each,
    per attack; then accuracy under every attack, 1 - SSIM, sharpness and landscapes."""

    source: str
    dataset: DatasetName
    n_train: PositiveInt | None
    attacks: dict[str, FinetuneAttack] = Field(min_length=1)
    train: TrainConfig
    n_test: PositiveInt  # the evaluation matrix and 1 - SSIM: first n test images
    batch_size: PositiveInt
    hessian: HessianConfig
    landscape: FinetuneLandscape

    @field_validator("attacks")
    @classmethod
    def _keys(cls, v: dict) -> dict:
        for key in v:
            if not TAG.match(key) or key == "clean":
                raise ValueError(f"{key!r}: a key is lower-case letters, digits and _, not clean")
        return v


def finetune_config(params: Params) -> FinetuneConfig:
    """The finetune section, validated; its source is a clean run on its dataset."""
    cfg = params.section("finetune", FinetuneConfig)
    run = params.runs.get(cfg.source)
    if run is None:
        raise ParamsError(f"finetune.source: {cfg.source!r} is not listed in runs")
    if run.dataset != cfg.dataset or run.eps != 0:
        raise ParamsError(
            f"finetune.source: {cfg.source!r} must be a clean run (eps 0) on finetune.dataset "
            f"{cfg.dataset!r}"
        )
    return cfg


def identity(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return x


def make_attack(spec: FinetuneAttack, seed: int, stream: str) -> Perturb:
    """The attack of one fine-tuning set (a random start, if any, from `stream` of `seed`)."""
    return ATTACKS[spec.attack.name](spec.attack, spec.norm, spec.eps, rng(seed, stream))


def attacked(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, attack: Perturb, batch: int, desc: str
) -> torch.Tensor:
    """attack(model, x, y) in batches on the model's device, as one tensor on x's."""
    dev = next(model.parameters()).device
    return torch.cat(
        [
            attack(model, x[i : i + batch].to(dev), y[i : i + batch].to(dev)).to(x.device)
            for i in tqdm(range(0, len(x), batch), desc=desc, leave=False)
        ]
    )


def ssim_loss(x: torch.Tensor, x_adv: torch.Tensor) -> torch.Tensor:
    """1 - SSIM(x_i, x_adv_i) per image (see the module doc for the settings)."""
    if min(x.shape[-2:]) < WINDOW:
        raise ValueError(f"SSIM needs images of at least {WINDOW}x{WINDOW} pixels")
    sim = ssim(x_adv.double(), x.double(), 1.0, size_average=False, win_size=WINDOW, win_sigma=1.5)
    return 1 - sim


def finetune_seed(
    model: nn.Module, data: Dataset, spec: FinetuneAttack, cfg: FinetuneConfig, seed: int, key: str
) -> tuple[dict, list[dict]]:
    """Fine-tune `model` in place on the clean + adversarial set; returns the summary
    and the per-epoch rows."""
    x, y = data.x_train[: cfg.n_train], data.y_train[: cfg.n_train]
    attack = make_attack(spec, seed, "finetune_make")
    x_adv = attacked(model, x, y, attack, cfg.batch_size, f"make {key}")
    before = {
        "clean_model_adv_train_acc": accuracy(model, x_adv, y, None, cfg.batch_size),
        "train_ssim_loss": ssim_loss(x, x_adv).mean().item(),
    }
    seed_global(seed)
    generators = (rng(seed, "data_order"),)
    history, _ = fit(
        model, torch.cat([x, x_adv]), torch.cat([y, y]), cfg.train, identity, generators, key
    )
    return before | {
        "final_train_loss": history[-1]["train_loss"],
        "final_train_acc": history[-1]["train_acc"],
        "epochs": cfg.train.epochs,
        "n_train": len(x),
        "weight_norm": weight_norm(model),
    }, history


def finetune_seeds(
    key: str, data: Dataset, seeds: list[int], cfg: FinetuneConfig, source: Path, out: Path
) -> FinetuneMetrics:
    """Fine-tune every seed's clean model (source/seed<k>.pt) with attack `key`; writes
    out/seed<k>.pt (all at once, when every seed is done) and returns the summaries."""
    spec = cfg.attacks[key]

    def measure(seed: int) -> tuple[dict, dict]:
        model, payload = load_model(checkpoint_path(source, seed), cfg.train.hardware.device)
        summary, history = finetune_seed(model, data, spec, cfg, seed, key)
        log.info("%s seed %d: %s", key, seed, summary)
        payload = payload | {
            "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "run_id": f"{cfg.source}-finetune-{key}",
            "history": history,
            "weight_norm": summary["weight_norm"],
            "n_train": summary["n_train"],
        }
        payload.pop("last_state_dict", None)
        return summary, payload

    summary, payloads = over_seeds(seeds, measure)
    with atomic_dir(out) as staging:
        for seed, payload in payloads.items():
            save_checkpoint(checkpoint_path(staging, seed), payload)
    return FinetuneMetrics.model_validate(summary)


def evaluate_model(
    name: str,
    model: nn.Module,
    digest: str,
    source: Run,
    data: Dataset,
    cfg: FinetuneConfig,
    seed: int,
    partial_dir: Path,
) -> tuple[dict[str, float], pd.DataFrame, pd.DataFrame]:
    """One model's row of the matrix, its sharpness and its landscapes (an interrupted 2D
    grid resumes from a file in partial_dir keyed by the checkpoint's `digest` and the
    settings)."""
    x, y = data.x_test[: cfg.n_test], data.y_test[: cfg.n_test]
    out = {f"acc_{name}_{CLEAN}": accuracy(model, x, y, None, cfg.batch_size)}
    for key, spec in cfg.attacks.items():
        attack = make_attack(spec, seed, "finetune_eval")
        x_adv = attacked(model, x, y, attack, cfg.batch_size, f"{name}: {key}")
        out[f"acc_{name}_{key}"] = accuracy(model, x_adv, y, None, cfg.batch_size)
        if name == CLEAN:
            out[f"ssim_loss_{key}"] = ssim_loss(x, x_adv).mean().item()
    n_h = cfg.hessian.n_samples
    sharp, _ = sharpness_run(
        model, source, data.x_train[:n_h], data.y_train[:n_h], identity, cfg.hessian, 0.0
    )
    keep = ("lambda1", "lambda2", "lambda3", "trace", "max_rel_residual", "objective")
    out |= {f"{k}_{name}": v for k, v in sharp.items() if k in keep}
    n_l = cfg.landscape.n_train
    dev = next(model.parameters()).device
    splits = {"train": (data.x_train[:n_l].to(dev), data.y_train[:n_l].to(dev))}
    partial = partial_path(partial_dir, f"finetune-{name}", digest, cfg.landscape.model_dump())
    (curve, surface), summary = landscape_run(
        model, splits, identity, False, cfg.landscape, (partial,)
    )
    partial.unlink(missing_ok=True)
    out |= {f"{k}_{name}": v for k, v in summary.items()}
    return out, curve, surface


def evaluate_seeds(
    data: Dataset,
    seeds: list[int],
    cfg: FinetuneConfig,
    source: Run,
    source_dir: Path,
    finetuned: Path,
    out_1d: Path,
    out_2d: Path,
    partial_dir: Path,
) -> FinetuneEvalMetrics:
    """The matrix, 1 - SSIM, sharpness and landscapes of the clean model (source_dir) and
    of every fine-tuned one (finetuned/<key>), every seed; landscapes go to two CSVs with
    `seed` and `model` columns (partial_dir: resumable 2D grids)."""
    device = cfg.train.hardware.device
    dirs = {CLEAN: source_dir} | {key: finetuned / key for key in cfg.attacks}

    def measure(seed: int) -> tuple[dict, list[tuple[pd.DataFrame, pd.DataFrame]]]:
        metrics, frames = {}, []
        for name, folder in dirs.items():
            checkpoint = checkpoint_path(folder, seed)
            model, _ = load_model(checkpoint, device)
            log.info("seed %d: evaluating %s", seed, name)
            digest = file_digest(checkpoint)
            row, curve, surface = evaluate_model(
                name, model, digest, source, data, cfg, seed, partial_dir
            )
            metrics |= row
            for frame in (curve, surface):
                frame.insert(0, "model", name)
                frame.insert(0, "seed", seed)
            frames.append((curve, surface))
        return metrics, frames

    summary, per_seed = over_seeds(seeds, measure)
    frames = [pair for pairs in per_seed.values() for pair in pairs]
    with atomic_outputs(out_1d, out_2d) as (tmp1, tmp2):
        pd.concat([c for c, _ in frames], ignore_index=True).to_csv(tmp1, index=False)
        pd.concat([s for _, s in frames], ignore_index=True).to_csv(tmp2, index=False)
    return FinetuneEvalMetrics.model_validate(summary)
