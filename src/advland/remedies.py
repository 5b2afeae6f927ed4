"""Remedies for the sharpness of adversarial training, as add-ons to `train.fit`.

- eps warm-up (Liu et al. 2020), `EpsWarmup`: in epoch t = 0, 1, ... (0-based, so the
  first epoch trains at eps(0) = 0) the perturbation is rebuilt with
  linear  eps(t) = min(eps, eps_max t / T),  cosine  eps(t) = min(eps, eps_max (1 - cos(pi t/T)) / 2),
  eps_max = ratio x eps. Per epoch, not per step: each epoch's logged loss is then at one
  eps, and the attack is built once per epoch. PGD's step follows eps(t): a
  `rel_step_size` attack scales by construction; an absolute `step_size` is scaled by
  eps(t) / eps here, so that both keep the ratio step / eps of the full-eps attack.
- AWP (Wu et al. 2020), `AWP`: per batch, after the attack, v_l = gamma ||w_l|| g_l / ||g_l||
  with g = d loss_adv / d w (one ascent step, rescaled per layer); the training gradient
  is taken at w + v, v is removed, and the optimizer steps at w. Only the weights of
  linear and convolutional layers are perturbed (`awp_parameters`): biases and BatchNorm
  are left out, so for logistic regression v perturbs w (its one weight vector) and not b.
- EntropySGD (Chaudhari et al. 2019) as Kanai et al. use it: the optimizer
  "entropy_sgd" (core.optim.EntropySGD), which descends the local entropy with L inner
  SGLD steps, each on the same batch with the attack recomputed at the inner weights
  (fit passes it that closure). An epoch of entropy_sgd costs L epochs of gradients.

The hooks implement train.Hook's three methods (this module does not import train).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from advland.core.models import per_example_loss
from advland.core.perturb import Perturb


def warmup_eps(kind: str, eps: float, eps_max: float, t: float, horizon: float) -> float:
    """eps(t) of a warm-up schedule (module doc); `constant` is eps."""
    if kind == "linear":
        return min(eps, eps_max * t / horizon)
    if kind == "cosine":
        return min(eps, 0.5 * eps_max * (1 - math.cos(math.pi * min(t, horizon) / horizon)))
    return eps


class EpsWarmup:
    """A perturbation rebuilt at every epoch's start with eps(t); `build(eps, scale)` makes
    the perturbation of radius eps with absolute step sizes scaled by `scale`."""

    def __init__(self, build: Callable[[float, float], Perturb], kind: str, eps: float,
                 ratio: float, horizon: int):  # fmt: skip
        self.build, self.kind, self.eps = build, kind, eps
        self.eps_max, self.horizon = ratio * eps, horizon
        self.current = eps
        self.perturb = build(eps, 1.0)

    def epoch_start(self, epoch: int) -> None:
        self.current = warmup_eps(self.kind, self.eps, self.eps_max, epoch, self.horizon)
        scale = self.current / self.eps if self.eps > 0 else 1.0
        self.perturb = self.build(self.current, scale)

    def before_forward(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
        pass

    def after_backward(self, model: nn.Module) -> None:
        pass

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.perturb(model, x, y)


def awp_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The weights AWP perturbs: those of Linear and Conv layers (no bias, no BatchNorm)."""
    return [m.weight for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d))]


class AWP:
    """Adversarial weight perturbation of relative size gamma per layer (module doc)."""

    def __init__(self, gamma: float, start_epoch: int = 0):
        self.gamma, self.start_epoch = gamma, start_epoch
        self.active = False
        self.v: list[tuple[nn.Parameter, torch.Tensor]] = []

    def epoch_start(self, epoch: int) -> None:
        self.active = epoch >= self.start_epoch

    def before_forward(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
        if not self.active or self.gamma == 0:
            return
        params = awp_parameters(model)
        buffers = [b.detach().clone() for b in model.buffers()]  # BN statistics: untouched
        with torch.enable_grad():
            loss = per_example_loss(model(x).float(), y).mean()
            grads = torch.autograd.grad(loss, params)
        with torch.no_grad():
            for b, saved in zip(model.buffers(), buffers, strict=True):
                b.copy_(saved)
            self.v = []
            for p, g in zip(params, grads, strict=True):
                scale = self.gamma * p.norm() / g.norm().clamp_min(1e-20)
                v = g * scale
                p.add_(v)
                self.v.append((p, v))

    def after_backward(self, model: nn.Module) -> None:
        with torch.no_grad():
            for p, v in self.v:
                p.sub_(v)
        self.v = []


def remedy_hooks(cfg, eps: float, build: Callable[..., Perturb]) -> tuple[Perturb, list]:
    """The perturbation and hooks a config.TrainConfig asks for: `build(eps, step_scale)`
    makes the run's perturbation; eps_schedule wraps it, awp adds its hook."""
    hooks: list = []
    sched = cfg.eps_schedule
    perturb = build(eps)
    if sched.kind != "constant" and eps > 0:
        perturb = EpsWarmup(build, sched.kind, eps, sched.eps_max_ratio, sched.epochs or cfg.epochs)
        hooks.append(perturb)
    if cfg.awp.gamma > 0:
        hooks.append(AWP(cfg.awp.gamma, cfg.awp.start_epoch))
    return perturb, hooks
