"""Optimizers by name (OPTIMIZERS) and the learning-rate schedules.

Schedules, at a fraction p in [0, 1) of training: constant lr; cosine
lr (1 + cos(pi p)) / 2; piecewise lr 0.1^(number of milestones <= p). With
`warmup` = w > 0 the rate is first scaled by p / w while p < w (linear warm-up, which
keeps a fresh network from diverging in its first steps at a large rate).

entropy_sgd, EntropySGD (Chaudhari et al. 2019, as Kanai et al. use it for adversarial
training) descends the local entropy F(w) = -log int exp(-L(w') - gamma/2 ||w - w'||^2) dw',
grad F = gamma (w - mu) with mu the Gibbs mean of w'. mu is estimated by L SGLD steps
from w' = w, each with the gradient of the batch loss at w' (the closure; in training it
recomputes the attack at w'):
    w' <- w' - eta' (grad L(w') + wd w' + gamma (w' - w)) + s sqrt(eta') N(0, I),
    mu <- (1 - alpha) mu + alpha w';
then heavy-ball momentum SGD at lr on w - mu = grad F / gamma_t, as the reference
implementation does (ucla-vision/entropy-sgd, python/optim.py: lr = 1 moves w to mu),
gamma_t = gamma_0 (1 + gamma_1)^t over outer steps t. The SGLD samples
exp(-(L + gamma/2 ||w - w'||^2) / T) at temperature T = s^2 / 2 (the reference's noise
is sqrt(2) larger: T = s^2); for a quadratic L = a w^2/2 its mean gamma w / (a + gamma)
does not depend on T, and F has curvature a gamma / (a + gamma), so w - mu = a w / (a + gamma).
One outer step costs L gradients (the first is the one at w that fit computed).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch

from advland.core.registry import Registry

OPTIMIZERS: Registry = Registry("optimizer")


@OPTIMIZERS.register("sgd")
def sgd(params: Iterable[torch.torch.nn.Parameter], cfg) -> torch.optim.Optimizer:
    """SGD with (heavy-ball) momentum and L2 weight decay."""
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def make_optimizer(params: Iterable[torch.torch.nn.Parameter], cfg) -> torch.optim.Optimizer:
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


class EntropySGD(torch.optim.Optimizer):
    """EntropySGD with momentum (module doc). `step(closure)`: the .grad on entry is the
    first inner step's gradient (at w); the closure sets .grad at the current weights."""

    needs_closure = True

    def __init__(self, params: Iterable[torch.nn.Parameter], lr: float, momentum: float = 0.0,
                 weight_decay: float = 0.0, inner_steps: int = 20, inner_lr: float = 0.1,
                 noise: float = 1e-4, alpha: float = 0.75, gamma0: float = 0.03,
                 gamma1: float = 1e-3):  # fmt: skip
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, t=0)
        super().__init__(params, defaults)
        self.inner = dict(L=inner_steps, eta=inner_lr, noise=noise, alpha=alpha)
        self.gamma0, self.gamma1 = gamma0, gamma1

    def gamma(self, group: dict) -> float:
        """gamma_t = gamma_0 (1 + gamma_1)^t after t outer steps."""
        return self.gamma0 * (1 + self.gamma1) ** group["t"]

    @torch.no_grad()
    def step(self, closure: Callable[[], object]) -> None:
        """One outer step (the class doc)."""
        groups = [(g, p, p.detach().clone()) for g in self.param_groups for p in g["params"]]
        mu = [w.clone() for _, _, w in groups]
        eta, noise, alpha = self.inner["eta"], self.inner["noise"], self.inner["alpha"]
        for i in range(self.inner["L"]):
            if i > 0:
                with torch.enable_grad():
                    closure()
            for (g, p, w), m in zip(groups, mu, strict=True):
                grad = p.grad if p.grad is not None else torch.zeros_like(p)
                p.sub_(eta * (grad + g["weight_decay"] * p + self.gamma(g) * (p - w)))
                if noise > 0:
                    p.add_(torch.randn_like(p), alpha=noise * math.sqrt(eta))
                m.mul_(1 - alpha).add_(p, alpha=alpha)
        for (g, p, w), m in zip(groups, mu, strict=True):
            p.copy_(w)
            p.grad = w - m  # grad F / gamma_t, kept for inspection
            step = p.grad
            if g["momentum"] > 0:
                buf = self.state[p].setdefault("momentum_buffer", torch.zeros_like(p))
                step = buf.mul_(g["momentum"]).add_(p.grad)
            p.sub_(g["lr"] * step)
        for g in self.param_groups:
            g["t"] += 1


@OPTIMIZERS.register("entropy_sgd")
def entropy_sgd(params: Iterable[torch.nn.Parameter], cfg) -> torch.optim.Optimizer:
    """EntropySGD (see the module doc) with cfg.entropy's settings."""
    e = cfg.entropy
    return EntropySGD(params, cfg.lr, cfg.momentum, cfg.weight_decay, e.inner_steps,
                      e.inner_lr, e.noise, e.alpha, e.gamma0, e.gamma1)  # fmt: skip
