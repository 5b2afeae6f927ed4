"""Models: binary logistic regression and a CIFAR-style ResNet18, one loss for both.

A model maps images in [0,1] to logits: shape (N,) for a binary model (one logit,
class 1 when positive) and (N, K) for a K-class model.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def per_example_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Binary: log(1 + exp(-y_pm f)) with y_pm = 2y - 1; K classes: cross-entropy."""
    if logits.ndim == 1:
        return F.softplus(-(2 * y - 1).to(logits.dtype) * logits)
    return F.cross_entropy(logits, y, reduction="none")


def predict(logits: torch.Tensor) -> torch.Tensor:
    return (logits > 0).long() if logits.ndim == 1 else logits.argmax(1)


def unit_direction(w: torch.Tensor, norm: str) -> torch.Tensor:
    """Rows of w mapped to sign(w) (Linf) or w / ||w||_2 (L2, 0 at w = 0)."""
    if norm == "linf":
        return w.sign()
    return w / w.norm(dim=1, keepdim=True).clamp_min(1e-12)


class LogisticRegression(nn.Module):
    """f(x) = w.x + b on flattened pixels. Starts at w = 0, b = 0."""

    def __init__(self, in_features: int):
        super().__init__()
        self.linear = nn.Linear(in_features, 1)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    @property
    def w(self) -> torch.Tensor:
        return self.linear.weight[0]

    @property
    def b(self) -> torch.Tensor:
        return self.linear.bias[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.flatten(1))[:, 0]

    @torch.no_grad()
    def ascent_direction(self, y: torch.Tensor, norm: str) -> torch.Tensor:
        """PGD's direction, the same at every x: with l = softplus(-y_pm f(x)),
        dl/dx = -y_pm sigmoid(-y_pm f(x)) w and sigmoid > 0, so sign(dl/dx) = -y_pm sign(w)
        and dl/dx / ||dl/dx|| = -y_pm w / ||w||. Shape (N, d); 0 at w = 0."""
        return -(2 * y - 1).to(self.w.dtype)[:, None] * unit_direction(self.w[None], norm)


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet18(nn.Module):
    """CIFAR-style ResNet18: 3x3 stem, no max-pool, widths w, 2w, 4w, 8w.

    Standardization (x - mean) / std happens inside, so attacks work in [0,1] pixels.
    """

    def __init__(
        self,
        in_channels: int = 3,
        n_classes: int = 10,
        width: int = 64,
        mean: tuple[float, ...] = (0.5,),
        std: tuple[float, ...] = (0.5,),
    ):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU()
        )
        layers, c_in = [], width
        for i, stride in enumerate((1, 2, 2, 2)):
            c_out = width * 2**i
            layers += [BasicBlock(c_in, c_out, stride), BasicBlock(c_out, c_out, 1)]
            c_in = c_out
        self.layers = nn.Sequential(*layers)
        self.head = nn.Linear(c_in, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(self.stem((x - self.mean) / self.std))
        return self.head(F.adaptive_avg_pool2d(out, 1).flatten(1))


def build_model(
    name: str,
    shape: tuple[int, ...],
    n_classes: int,
    width: int = 64,
    mean: tuple[float, ...] = (0.5,),
    std: tuple[float, ...] = (0.5,),
) -> nn.Module:
    """`lr` needs a binary dataset; `resnet18` takes 1- or 3-channel images."""
    if name == "lr":
        if n_classes != 2:
            raise ValueError(f"model 'lr' is binary; this dataset has {n_classes} classes")
        return LogisticRegression(int(torch.tensor(shape).prod()))
    if name == "resnet18":
        return ResNet18(shape[0], n_classes, width, mean, std)
    raise ValueError(f"unknown model {name!r}; allowed: lr, resnet18")
