"""Models: binary logistic regression, a small CNN and a CIFAR-style ResNet18, one loss.

A model maps images in [0,1] to logits: shape (N,) for a binary model (one logit,
class 1 when positive) and (N, K) for a K-class model. MODELS maps a name to its
builder; `load_model` rebuilds a trained one from its checkpoint.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from advland.core.errors import CheckpointError, ParamsError
from advland.core.io import load_checkpoint
from advland.core.norms import NORMS
from advland.core.registry import Registry

# Standardization inside ResNet18 (Madry et al.'s per-channel statistics for CIFAR10).
CHANNEL_STATS = {
    3: ((0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616)),
    1: ((0.5,), (0.5,)),
}


def per_example_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Binary: log(1 + exp(-y_pm f)) with y_pm = 2y - 1; K classes: cross-entropy."""
    if logits.ndim == 1:
        return F.softplus(-(2 * y - 1).to(logits.dtype) * logits)
    return F.cross_entropy(logits, y, reduction="none")


def predict(logits: torch.Tensor) -> torch.Tensor:
    return (logits > 0).long() if logits.ndim == 1 else logits.argmax(1)


class Linear(nn.Module):
    """A linear model, f(x) = w.x + b (or several stacked): it has `w`, `b` and
    `ascent_direction(y, norm)`, PGD's direction, which does not depend on x."""


def is_linear(model: nn.Module) -> bool:
    """Whether `model` is linear (`Linear`): closed forms (attacks, Hessians) apply."""
    return isinstance(model, Linear)


class LogisticRegression(Linear):
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
        return -(2 * y - 1).to(self.w.dtype)[:, None] * NORMS[norm].unit(self.w[None])


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


class SmallCNN(nn.Module):
    """Four 3x3 conv layers (widths w, w, 2w, 2w), each with BatchNorm and ReLU, a 2x2
    max-pool after the second and the fourth, and one linear layer on the flattened
    features. Standardization happens inside, as in ResNet18."""

    def __init__(
        self,
        in_channels: int,
        n_classes: int,
        width: int,
        side: int,
        mean: tuple[float, ...],
        std: tuple[float, ...],
    ):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

        def block(c_in: int, c_out: int) -> list[nn.Module]:
            return [nn.Conv2d(c_in, c_out, 3, 1, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]

        w = width
        self.features = nn.Sequential(
            *block(in_channels, w), *block(w, w), nn.MaxPool2d(2),
            *block(w, 2 * w), *block(2 * w, 2 * w), nn.MaxPool2d(2),
        )  # fmt: skip
        self.head = nn.Linear(2 * w * (side // 4) ** 2, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features((x - self.mean) / self.std).flatten(1))


MODELS: Registry = Registry("model")


@MODELS.register("lr")
def build_lr(shape: tuple[int, ...], n_classes: int, width: int | None = None) -> nn.Module:
    """Binary logistic regression on the flattened image."""
    if n_classes != 2:
        raise ParamsError(f"model 'lr' is binary; this dataset has {n_classes} classes")
    return LogisticRegression(int(torch.tensor(shape).prod()))


@MODELS.register("resnet18")
def build_resnet18(shape: tuple[int, ...], n_classes: int, width: int | None = 64) -> nn.Module:
    """CIFAR-style ResNet18 on 1- or 3-channel images, standardized inside."""
    mean, std = CHANNEL_STATS[shape[0]]
    return ResNet18(shape[0], n_classes, width or 64, mean, std)


@MODELS.register("cnn")
def build_cnn(shape: tuple[int, ...], n_classes: int, width: int | None = 16) -> nn.Module:
    """The 4-conv CNN with BatchNorm (SmallCNN), default width 16."""
    mean, std = CHANNEL_STATS[shape[0]]
    return SmallCNN(shape[0], n_classes, width or 16, shape[1], mean, std)


def build_model(name: str, shape: tuple[int, ...], n_classes: int, width: int | None = None):
    """A fresh model for images of `shape` (C, H, W) and `n_classes` classes."""
    return MODELS[name](tuple(shape), n_classes, width)


def resolve_device(name: str) -> torch.device:
    """auto: CUDA when available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def checkpoint_path(model_dir: Path, seed: int) -> Path:
    """Where seed `seed` of a run lives inside the run's model folder."""
    return Path(model_dir) / f"seed{seed}.pt"


def load_model(checkpoint: Path, device: str = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild a trained model from its checkpoint (loaded with weights_only=True)."""
    payload = load_checkpoint(checkpoint)
    try:
        arch = payload["architecture"]
        model = build_model(arch["model"], arch["shape"], arch["n_classes"], arch["width"])
        model.load_state_dict(payload["state_dict"])
    except (KeyError, TypeError, RuntimeError, ParamsError) as err:
        raise CheckpointError(f"{checkpoint}: does not fit this model ({err})") from None
    model.eval()
    return model.to(resolve_device(device)), payload
