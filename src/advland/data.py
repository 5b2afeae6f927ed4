"""Prepared datasets: one compact .npz per dataset plus a JSON of provenance.

Label convention (stored labels are class indices 0..K-1):
- mnist2: digit 0 -> 0, digit 1 -> 1;  cifar2: frog (CIFAR class 6) -> 0, ship (8) -> 1.
- mnist, fashion_mnist, cifar10, svhn: the usual 10 classes (SVHN's digit 0 is 0).
(core.datasets holds each dataset's classes, shape and source.)
Binary models use y_pm = 2 y - 1 in {-1, +1}; images are uint8 NCHW, read as x / 255.
"""

from __future__ import annotations

import json
import logging
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from advland.core.datasets import DATASETS
from advland.core.errors import DataError
from advland.core.io import atomic_outputs
from advland.sources import RawSplits, fetch, file_digest

log = logging.getLogger(__name__)


def select_classes(x: np.ndarray, y: np.ndarray, classes: tuple[int, ...]):
    """Keep the given classes and relabel them 0..len(classes)-1 in that order."""
    keep = np.isin(y, classes)
    relabel = np.full(int(y.max()) + 1, -1, np.int64)
    relabel[list(classes)] = np.arange(len(classes))
    return x[keep], relabel[y[keep]]


def derive(dataset: str, raw: RawSplits) -> dict[str, np.ndarray]:
    arrays = {
        "x_train": raw.x_train,
        "y_train": raw.y_train,
        "x_test": raw.x_test,
        "y_test": raw.y_test,
    }
    cls = DATASETS[dataset].source_classes
    if cls is not None:
        arrays["x_train"], arrays["y_train"] = select_classes(raw.x_train, raw.y_train, cls)
        arrays["x_test"], arrays["y_test"] = select_classes(raw.x_test, raw.y_test, cls)
    return arrays


def prepare(
    dataset: str,
    out_npz: Path,
    out_json: Path,
    raw_dir: Path,
    cache_dir: Path,
    sources: list[str],
    timeout_s: float = 20.0,
) -> dict:
    """Build data/prepared/{dataset}.npz and its JSON record; both appear or neither."""
    raw = fetch(dataset, raw_dir, cache_dir, sources, timeout_s)
    arrays = derive(dataset, raw)
    facts = DATASETS[dataset]
    if arrays["x_train"].shape[1:] != facts.shape:
        raise DataError(
            f"{dataset}: source {raw.source} gave images of shape "
            f"{arrays['x_train'].shape[1:]}, expected {facts.shape}"
        )
    n_classes = len(facts.classes)
    info = {
        "dataset": dataset,
        "source": raw.source,
        "source_files_sha256": raw.files,
        "shape": list(arrays["x_train"].shape[1:]),
        "classes": list(facts.classes),
        "label_convention": "class index 0..K-1 in the order of `classes`",
        "counts": {
            split: {
                "total": int(len(arrays[f"y_{split}"])),
                "per_class": np.bincount(arrays[f"y_{split}"], minlength=n_classes).tolist(),
            }
            for split in ("train", "test")
        },
    }
    with atomic_outputs(out_npz, out_json) as (tmp_npz, tmp_json):
        with open(tmp_npz, "wb") as f:
            np.savez(f, **arrays)
        info["npz_sha256"] = file_digest(tmp_npz)
        tmp_json.write_text(json.dumps(info, indent=2) + "\n")
    log.info(
        "%s: %d train / %d test from %s",
        dataset,
        info["counts"]["train"]["total"],
        info["counts"]["test"]["total"],
        raw.source,
    )
    return info


@dataclass
class Dataset:
    """Float tensors in [0,1], NCHW, with int64 labels."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    n_classes: int

    def subset(self, n_train: int | None = None, n_test: int | None = None) -> Dataset:
        """The first n examples of each split (prepared files keep the source order)."""
        return Dataset(
            self.x_train[:n_train],
            self.y_train[:n_train],
            self.x_test[:n_test],
            self.y_test[:n_test],
            self.n_classes,
        )

    def seen(self, n_trained: int, n_train: int | None, n_test: int | None) -> Dataset:
        """subset(n_train, n_test) with the training split kept inside the first
        n_trained examples, the ones a model was trained on (all of them for None)."""
        return self.subset(min(n_train or n_trained, n_trained), n_test)


def load_prepared(path: Path) -> Dataset:
    """Load a prepared .npz (no pickle allowed); errors name the file."""
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in ("x_train", "y_train", "x_test", "y_test")}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
        raise DataError(f"{path}: not a valid prepared dataset ({err})") from None
    if any(arrays[k].dtype != np.uint8 for k in ("x_train", "x_test")):
        raise DataError(f"{path}: images must be uint8")
    n_classes = int(max(arrays["y_train"].max(), arrays["y_test"].max())) + 1

    def images(x):
        return torch.from_numpy(x).float().div_(255)

    return Dataset(
        images(arrays["x_train"]),
        torch.from_numpy(arrays["y_train"]).long(),
        images(arrays["x_test"]),
        torch.from_numpy(arrays["y_test"]).long(),
        n_classes,
    )
