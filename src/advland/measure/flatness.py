"""The flatness suite: scale-invariant and robust sharpness of a run's trained weights.

Every measure is taken of a loss L(w) = mean_i loss(f_w(x'_i), y_i) over the first
n_train examples the run was trained on, for each of three targets (TARGETS):
- own:    the run's training objective at its own eps (its attack, or one noise draw),
          as the hessian stage measures it;
- robust: the robust loss at the common evaluation eps of the dataset and norm
          (`eval_eps`, the evaluation attack), the same loss for every run of a family;
- clean:  the clean loss.
The fixed-input measures (adaptive Hessian, average and worst-case sharpness) attack
once at the trained weights and keep x' fixed; robust flatness re-runs the target's
attack at every perturbed weight (a noise draw stays fixed). MEASURES names them:
- adaptive_hessian: lambda1 and trace of T H T, T = diag(|w| + eta) (measure.sharpness);
- average: E[L(w + delta)] - L(w), delta ~ N(0, rho^2 diag(c^2)), c = 1 or |w| + eta;
- worst:   worst-case m-sharpness in L2 and Linf balls ||T^-1 delta||_p <= rho;
- robust_flatness: Stutz et al.'s average over the layer-wise relative sphere
           ||nu_l|| = xi ||w_l|| and worst case in that ball jointly with the inputs.
Each measure draws from its own generator (stream `flatness` of the seed), so turning
one off changes no other. Beside the measures, each seed's robust losses, accuracies
and gap at the common eps, on the first n_train / n_test examples: what the report
ranks the measures against.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Literal, NamedTuple

import torch
from pydantic import Field, NonNegativeFloat, PositiveFloat, PositiveInt, RootModel, field_validator
from torch import nn

from advland.core.config import Params, Run
from advland.core.errors import ParamsError
from advland.core.models import checkpoint_path, load_model, per_example_loss, predict
from advland.core.perturb import PERTURBATIONS, Perturb, make_perturb
from advland.core.registry import Registry
from advland.core.rng import rng
from advland.core.sections import NormAttack, Strict, parse_eps
from advland.measure.perseed import over_seeds
from advland.measure.robust_flatness import robust_flatness_average, robust_flatness_worst
from advland.measure.sharpness import (
    adaptive_hessian,
    average_sharpness,
    make_loss,
    worst_sharpness,
)
from advland.metrics.flatness import FlatnessMetrics

log = logging.getLogger(__name__)
Rhos = list[PositiveFloat]


class AdaptiveHessianConfig(Strict):
    lanczos_iters: PositiveInt
    trace_samples: PositiveInt


class AverageConfig(Strict):
    rho_plain: Rhos = Field(min_length=1)  # delta ~ N(0, rho^2 I)
    rho_adaptive: Rhos = Field(min_length=1)  # delta ~ N(0, rho^2 diag((|w| + eta)^2))
    draws: PositiveInt  # antithetic pairs (delta, -delta)


class WorstConfig(Strict):
    m: PositiveInt  # the batch size of m-sharpness
    steps: PositiveInt  # projected ascent steps per batch
    rho: dict[Literal["l2_plain", "l2_adaptive", "linf_plain", "linf_adaptive"], Rhos]


class RobustFlatnessConfig(Strict):
    xi_avg: PositiveFloat  # Stutz et al.: 0.5
    draws: PositiveInt  # Stutz et al.: 10
    xi_worst: PositiveFloat  # Stutz et al.: 0.003
    steps: PositiveInt  # joint weight and input ascent steps (Stutz et al.: 20)


class FlatnessConfig(Strict):
    """flatness.<dataset>.<model>: which targets and measures a run gets, and how."""

    n_train: PositiveInt  # the first n training examples (of those trained on)
    n_test: PositiveInt  # the first n test examples (the robust gap)
    eval_eps: dict[str, float]  # per norm: the common robust target's eps
    targets: list[Literal["own", "robust", "clean"]] = Field(min_length=1)
    eta: NonNegativeFloat  # T = |w| + eta (ASAM: 0.01)
    logit_norm: bool  # logits / ||logits|| before the loss
    dtype: Literal["float64", "float32"]
    adaptive_hessian: AdaptiveHessianConfig | None = None
    average: AverageConfig | None = None
    worst: WorstConfig | None = None
    robust_flatness: RobustFlatnessConfig | None = None

    @field_validator("eval_eps", mode="before")
    @classmethod
    def _eps(cls, v: dict) -> dict:
        return {norm: parse_eps(eps) for norm, eps in v.items()} if isinstance(v, dict) else v


def flatness_config(params: Params, run: Run) -> FlatnessConfig:
    """flatness.<dataset>.<model> of a run, validated; its eval_eps names the run's norm."""
    path = f"flatness.{run.dataset}.{run.model}"
    cfg = params.section(path, FlatnessConfig)
    if run.norm not in cfg.eval_eps:
        raise ParamsError(f"{path}.eval_eps: no eps for norm {run.norm!r} (run {run.run_id})")
    return cfg


class FlatnessSettings(RootModel[dict[str, dict[str, FlatnessConfig]]]):
    """flatness: per dataset, per model."""


def flatness_settings(params: Params) -> FlatnessSettings:
    """The flatness section of every run's dataset and model, checked (pipeline.settings)."""
    settings: dict[str, dict[str, FlatnessConfig]] = {}
    for run in params.runs.values():
        settings.setdefault(run.dataset, {})[run.model] = flatness_config(params, run)
    return FlatnessSettings(settings)


class Target(NamedTuple):
    """A loss to measure: its perturbation at the trained weights, the one re-run at a
    perturbed weight (None: the inputs stay fixed), and the input ball of the joint ascent."""

    perturb: Perturb
    rerun: bool
    norm: str
    eps: float


class Context(NamedTuple):
    model: nn.Module
    x_clean: torch.Tensor
    x: torch.Tensor  # the target's inputs at the trained weights
    y: torch.Tensor
    target: Target
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    cfg: FlatnessConfig
    seed: int


def _own(run: Run, attack: NormAttack, distribution: str, cfg: FlatnessConfig, gen) -> Target:
    perturb = make_perturb(run.noise, run.norm, run.eps, attack.train, distribution, gen)
    rerun = run.eps > 0 and PERTURBATIONS[run.noise].moves_with_weights
    return Target(perturb, rerun, run.norm, run.eps if rerun else 0.0)


def _robust(run: Run, attack: NormAttack, distribution: str, cfg: FlatnessConfig, gen) -> Target:
    eps = cfg.eval_eps[run.norm]
    return Target(
        make_perturb("adv", run.norm, eps, attack.eval, distribution, gen), eps > 0, run.norm, eps
    )


def _clean(run: Run, attack: NormAttack, distribution: str, cfg: FlatnessConfig, gen) -> Target:
    return Target(lambda model, x, y: x, False, run.norm, 0.0)


TARGETS: Registry[Callable[..., Target]] = Registry(
    "flatness target", {"own": _own, "robust": _robust, "clean": _clean}
)


def _adaptive_hessian(c: Context) -> dict[str, float]:
    h = c.cfg.adaptive_hessian
    dtype = next(c.model.parameters()).dtype
    out = adaptive_hessian(
        c.model, c.x, c.y, c.loss, c.cfg.eta, h.lanczos_iters, h.trace_samples, c.seed, dtype
    )
    return {"adaptive_lambda1": out["lambda1"], "adaptive_trace": out["trace"]}


def _average(c: Context) -> dict[str, float]:
    a = c.cfg.average
    return {
        f"avg_{kind}_{i}": average_sharpness(
            c.model, c.x, c.y, c.loss, rho, kind, c.cfg.eta, a.draws, rng(c.seed, "flatness")
        )
        for kind, grid in (("plain", a.rho_plain), ("adaptive", a.rho_adaptive))
        for i, rho in enumerate(grid, 1)
    }


def _worst(c: Context) -> dict[str, float]:
    w = c.cfg.worst
    out = {}
    for variant, grid in w.rho.items():
        p, kind = variant.split("_")
        for i, rho in enumerate(grid, 1):
            gen = rng(c.seed, "flatness")
            out[f"worst_{variant}_{i}"] = worst_sharpness(
                c.model, c.x, c.y, c.loss, rho, p, kind, c.cfg.eta, w.m, w.steps, gen
            )
    return out


def _robust_flatness(c: Context) -> dict[str, float]:
    r, t = c.cfg.robust_flatness, c.target
    x_fixed = c.x
    perturb = t.perturb if t.rerun else (lambda model, x, y: x_fixed)
    x = c.x_clean if t.rerun else x_fixed
    avg = robust_flatness_average(
        c.model, x, c.y, c.loss, perturb, r.xi_avg, r.draws, rng(c.seed, "flatness")
    )
    worst = robust_flatness_worst(
        c.model,
        x,
        c.y,
        c.loss,
        perturb,
        t.norm,
        t.eps,
        r.xi_worst,
        r.steps,
        rng(c.seed, "flatness"),
    )
    return {"rflat_avg": avg, "rflat_worst": worst}


MEASURES: Registry[Callable[[Context], dict[str, float]]] = Registry(
    "flatness measure",
    {
        "adaptive_hessian": _adaptive_hessian,
        "average": _average,
        "worst": _worst,
        "robust_flatness": _robust_flatness,
    },
)


def attacked(model: nn.Module, x: torch.Tensor, y: torch.Tensor, perturb: Perturb) -> torch.Tensor:
    """perturb(model, x, y) in chunks of 1024 examples."""
    return torch.cat(
        [perturb(model, x[i : i + 1024], y[i : i + 1024]) for i in range(0, len(x), 1024)]
    )


@torch.no_grad()
def loss_and_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Mean loss and accuracy (%) of fixed inputs."""
    logits = model(x)
    return per_example_loss(logits, y).mean().item(), 100.0 * (
        predict(logits) == y
    ).float().mean().item()


def flatness_run(
    model: nn.Module,
    run: Run,
    data,
    attack: NormAttack,
    distribution: str,
    cfg: FlatnessConfig,
    seed: int,
) -> dict[str, float]:
    """The robust gap at the common eps, then every measure of cfg on every target."""
    model.eval()
    dtype = getattr(torch, cfg.dtype)
    net = model.to(dtype)
    x, y = data.x_train.to(dtype), data.y_train
    robust = _robust(run, attack, distribution, cfg, rng(seed, "flatness"))
    inputs = {"robust": attacked(net, x, y, robust.perturb).detach()}
    train_loss, train_acc = loss_and_accuracy(net, inputs["robust"], y)
    x_test = data.x_test.to(dtype)
    test_loss, test_acc = loss_and_accuracy(
        net, attacked(net, x_test, data.y_test, robust.perturb), data.y_test
    )
    out = {
        "eval_eps": robust.eps,
        "robust_train_loss": train_loss,
        "robust_test_loss": test_loss,
        "robust_train_acc": train_acc,
        "robust_test_acc": test_acc,
        "robust_gap": train_acc - test_acc,
    }
    loss = make_loss(cfg.logit_norm)
    for name in cfg.targets:
        target = TARGETS[name](run, attack, distribution, cfg, rng(seed, "flatness"))
        if name not in inputs:
            inputs[name] = attacked(net, x, y, target.perturb).detach()
        x_t = inputs[name]
        with torch.no_grad():
            out[f"{name}_loss"] = loss(net(x_t), y).item()
        context = Context(net, x, x_t, y, target, loss, cfg, seed)
        for measure, compute in MEASURES.items():
            if getattr(cfg, measure) is not None:
                log.info("%s: %s of the %s target", run.run_id, measure, name)
                out |= {f"{name}_{key}": value for key, value in compute(context).items()}
    model.float()
    return out


def flatness_seeds(
    run: Run,
    data,
    seeds: list[int],
    model_dir: Path,
    attack: NormAttack,
    distribution: str,
    cfg: FlatnessConfig,
    device: str,
) -> FlatnessMetrics:
    """flatness_run for every seed of a run, on the first cfg.n_train examples it was
    trained on and the first cfg.n_test test examples."""

    def measure(seed: int) -> tuple[dict, None]:
        model, checkpoint = load_model(checkpoint_path(model_dir, seed), device)
        seen = data.seen(checkpoint["n_train"], cfg.n_train, cfg.n_test)
        return flatness_run(model, run, seen, attack, distribution, cfg, seed), None

    summary, _ = over_seeds(seeds, measure)
    return FlatnessMetrics.model_validate(summary)
