"""Training speed of a ResNet18 profile on this machine: seconds per batch of PGD
training (the profile's width, batch size, attack, bf16 / channels_last / compile
settings, on the device it would pick), and the epoch and training times they imply.

    python benchmarks/resnet_epoch.py                       # profiles/offline.yaml
    python benchmarks/resnet_epoch.py --profile profiles/paper.yaml --batches 20

Times `--batches` batches of the first PGD run's prepared data after one warm-up batch (lazy
initialization, autotuning, compilation); where that data is not prepared (CIFAR10 and
SVHN offline), random images of its shape and size stand in: the time does not depend
on pixel values. Training only: the per-epoch selection attack and the evaluate /
hessian / landscape stages come on top.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch
from common import ROOT, load_params, save

from advland.data import Dataset, load_prepared
from advland.train import fit, make_perturb, model_for, resolve_device

# (channels, height, width, training images) of the sets that cannot be had offline
SHAPES = {"cifar10": (3, 32, 32, 50000), "svhn": (3, 32, 32, 73257)}


def training_data(dataset: str) -> tuple[Dataset, bool]:
    """The prepared set, or random stand-ins of its shape; True when real."""
    path = ROOT / "data" / "prepared" / f"{dataset}.npz"
    if path.is_file():
        return load_prepared(path), True
    c, h, w, n = SHAPES[dataset]
    x, y = torch.rand(n, c, h, w), torch.randint(0, 10, (n,))
    return Dataset(x, y, x[:1000], y[:1000], 10), False


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--profile", default=str(ROOT / "profiles" / "offline.yaml"))
    parser.add_argument("--batches", type=int, default=5)
    args = parser.parse_args()
    params = load_params(Path(args.profile))
    spec = next(s for s in params.specs() if s.model == "resnet18" and s.eps > 0)
    cfg = params.train_for(spec).model_copy(update={"epochs": 1, "select_best": False})
    device = resolve_device(cfg.device)
    data, real = training_data(spec.dataset)
    attack = params.attack[spec.dataset][spec.norm].train
    model = model_for("resnet18", data, cfg.width).to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    if cfg.compile:
        model.forward = torch.compile(model.forward)
    perturb = make_perturb(spec, attack, params.noise.distribution, torch.Generator())

    def train_batches(n: int) -> float:
        x = data.x_train[: n * cfg.batch_size].to(device)
        y = data.y_train[: n * cfg.batch_size].to(device)
        t0 = time.perf_counter()
        fit(model, x, y, cfg, perturb, (torch.Generator().manual_seed(0),))
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    train_batches(1)
    per_batch = train_batches(args.batches) / args.batches
    epoch_s = per_batch * math.ceil(
        min(len(data.x_train), cfg.n_train or math.inf) / cfg.batch_size
    )
    runs = [s for s in params.specs() if s.model == "resnet18"]
    full_epochs = params.train_for(spec).epochs
    result = {
        "profile": Path(args.profile).name,
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "setting": f"width {cfg.width}, batch {cfg.batch_size}, PGD-{attack.steps} training, "
        f"bf16 {cfg.amp}, channels_last {cfg.channels_last}, compile {cfg.compile}",
        "batches_timed": args.batches,
        "s_per_batch": per_batch,
        "run": spec.run_id,
        "data": "prepared" if real else "random stand-ins",
        "s_per_epoch": epoch_s,
        "epochs": full_epochs,
        "runs": len(runs),
        "training_hours_all_runs": epoch_s * full_epochs * len(runs) / 3600,
    }
    save(f"resnet_epoch_{Path(args.profile).stem}_{device.type}", result)


if __name__ == "__main__":
    main()
