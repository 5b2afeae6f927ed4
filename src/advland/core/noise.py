"""Random perturbations: uniform in the norm's eps-ball, or Gaussian of the same
per-coordinate variance (norms.Norm.gaussian_std), then clipped to the box [0,1]."""

from __future__ import annotations

import torch

from advland.core.norms import NORMS, Norm
from advland.core.registry import Registry


def uniform(like: torch.Tensor, norm: Norm, eps: float, generator=None) -> torch.Tensor:
    return norm.sample_ball(like, eps, generator)


def gaussian(like: torch.Tensor, norm: Norm, eps: float, generator=None) -> torch.Tensor:
    std = norm.gaussian_std(like[0].numel(), eps)
    return std * torch.randn(like.shape, generator=generator, dtype=like.dtype)


DISTRIBUTIONS = Registry("noise distribution", {"uniform": uniform, "gaussian": gaussian})


def random_noise(
    x: torch.Tensor,
    norm: str,
    eps: float,
    distribution: str = "uniform",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """x + delta with delta drawn from the distribution, then clipped to the box [0,1]."""
    if eps == 0:
        return x
    delta = DISTRIBUTIONS[distribution](x, NORMS[norm], eps, generator)
    return (x + delta.to(x.device)).clamp_(0, 1)
