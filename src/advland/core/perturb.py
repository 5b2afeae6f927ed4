"""The perturbation a run trains and is measured with, as one function (model, x, y) -> x'.

PERTURBATIONS names what a run's `noise` field means:
- adv:  an attack from ATTACKS (PGD by default) of the run's norm and eps;
- rand: a fresh draw of random noise in the eps-ball (noise.random_noise).
Only `adv` moves with the weights, so a landscape re-runs it at every point.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import nn

from advland.core.attacks import fgsm, pgd, stadv
from advland.core.noise import random_noise
from advland.core.registry import Registry

Perturb = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]

ATTACKS: Registry = Registry("attack")


@ATTACKS.register("pgd")
def pgd_attack(cfg, norm: str, eps: float, generator: torch.Generator | None) -> Perturb:
    """PGD with cfg.steps steps of cfg.step(eps), random start if cfg.random_start."""
    step = cfg.step(eps)
    return lambda model, x, y: pgd(
        model, x, y, norm, eps, cfg.steps, step, cfg.random_start, generator=generator
    )


@ATTACKS.register("fgsm")
def fgsm_attack(cfg, norm: str, eps: float, generator: torch.Generator | None) -> Perturb:
    """One step of size eps, no random start (cfg's steps and step size do not apply)."""
    return lambda model, x, y: fgsm(model, x, y, norm, eps)


@ATTACKS.register("stadv")
def stadv_attack(cfg, norm: str, eps: float, generator: torch.Generator | None) -> Perturb:
    """stAdv's flow attack: cfg.steps Adam steps of cfg.step_size pixels, weight cfg.tau on
    the flow's smoothness, margin confidence cfg.kappa. It has no norm ball: norm and eps do
    not apply (but make_perturb still gives the identity at eps = 0)."""
    return lambda model, x, y: stadv(
        model, x, y, cfg.tau, cfg.steps, cfg.step_size, cfg.kappa or 0.0
    )


class Perturbation(NamedTuple):
    build: Callable[..., Perturb]
    moves_with_weights: bool


def _adversarial(norm, eps, attack, distribution, generator) -> Perturb:
    return ATTACKS[attack.name](attack, norm, eps, generator)


def _random(norm, eps, attack, distribution, generator) -> Perturb:
    return lambda model, x, y: random_noise(x, norm, eps, distribution, generator)


PERTURBATIONS: Registry[Perturbation] = Registry(
    "perturbation",
    {"adv": Perturbation(_adversarial, True), "rand": Perturbation(_random, False)},
)


def make_perturb(
    noise: str,
    norm: str,
    eps: float,
    attack,
    distribution: str,
    generator: torch.Generator | None,
) -> Perturb:
    """The perturbation `noise` (adv/rand) of a norm and eps; `attack` is a
    config.AttackConfig, `distribution` the random noise's. At eps = 0 every perturbation
    is the identity, and no attack is run."""
    if eps == 0:
        return lambda model, x, y: x
    return PERTURBATIONS[noise].build(norm, eps, attack, distribution, generator)
