"""Every dataset's facts, in one table: the names params may use, the source dataset its
images come from, the image shape, the class names in label order and, for a subset of
the source's classes, which ones (relabelled 0..K-1 in that order).

`sources` reads the source, `data` prepares and checks the images, the params schema
takes the names and which are binary (logistic regression needs two classes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

DatasetName = Literal["mnist2", "cifar2", "mnist", "fashion_mnist", "cifar10", "svhn"]
BinaryName = Literal["mnist2", "cifar2"]  # the two-class datasets (the table's `binary`)


@dataclass(frozen=True)
class DatasetInfo:
    source: str  # the source dataset: sources.py reads it
    shape: tuple[int, int, int]  # (C, H, W) of one image
    classes: tuple[str, ...]  # class names; label k is classes[k]
    source_classes: tuple[int, ...] | None = None  # a subset: the source labels kept, in order

    @property
    def binary(self) -> bool:
        return len(self.classes) == 2


DIGITS = tuple(str(d) for d in range(10))
FASHION = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
           "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")  # fmt: skip
CIFAR10 = ("airplane", "automobile", "bird", "cat", "deer",
           "dog", "frog", "horse", "ship", "truck")  # fmt: skip

DATASETS: dict[str, DatasetInfo] = {
    "mnist2": DatasetInfo("mnist", (1, 28, 28), ("0", "1"), (0, 1)),
    "cifar2": DatasetInfo("cifar10", (3, 32, 32), ("frog", "ship"), (6, 8)),
    "mnist": DatasetInfo("mnist", (1, 28, 28), DIGITS),
    "fashion_mnist": DatasetInfo("fashion_mnist", (1, 28, 28), FASHION),
    "cifar10": DatasetInfo("cifar10", (3, 32, 32), CIFAR10),
    "svhn": DatasetInfo("svhn", (3, 32, 32), DIGITS),
}
BINARY_DATASETS = tuple(name for name, info in DATASETS.items() if info.binary)
