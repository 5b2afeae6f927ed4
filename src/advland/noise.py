"""Random perturbations: uniform in the L2 ball or Linf cube, or Gaussian.

Uniform in the L2 ball of radius eps in d dimensions: a Gaussian direction scaled
to radius eps * U^(1/d), U ~ U(0,1), so that P(r <= t) = (t / eps)^d.
Gaussian noise has the per-coordinate variance of the uniform one:
eps^2 / (d + 2) for L2, eps^2 / 3 for Linf.
"""

from __future__ import annotations

import torch


def flat_norm(t: torch.Tensor, p: float = 2) -> torch.Tensor:
    """Per-example norm over all but the first dimension, shaped to broadcast."""
    return torch.linalg.vector_norm(t, p, dim=tuple(range(1, t.ndim)), keepdim=True)


def sample_ball(
    like: torch.Tensor, norm: str, eps: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """One perturbation per example, uniform in the `norm` ball of radius eps."""
    if norm == "linf":
        u = torch.rand(like.shape, generator=generator, dtype=like.dtype)
        return eps * (2 * u - 1)
    d = like[0].numel()
    direction = torch.randn(like.shape, generator=generator, dtype=like.dtype)
    direction /= flat_norm(direction).clamp_min(1e-12)
    radius = eps * torch.rand(len(like), generator=generator, dtype=like.dtype) ** (1.0 / d)
    return direction * radius.view(-1, *[1] * (like.ndim - 1))


def sample_gaussian(
    like: torch.Tensor, norm: str, eps: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    d = like[0].numel()
    std = eps / (d + 2) ** 0.5 if norm == "l2" else eps / 3**0.5
    return std * torch.randn(like.shape, generator=generator, dtype=like.dtype)


def random_noise(
    x: torch.Tensor,
    norm: str,
    eps: float,
    distribution: str = "uniform",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """x + delta with delta random (see module doc), then clipped to the box [0,1]."""
    if eps == 0:
        return x
    sample = sample_ball if distribution == "uniform" else sample_gaussian
    return (x + sample(x, norm, eps, generator).to(x.device)).clamp_(0, 1)
