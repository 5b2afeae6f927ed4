"""Training speed of a ResNet18 profile on this machine: seconds per batch of PGD
training (the profile's width, batch size, attack, bf16 / channels_last / compile
settings, on the device it would pick), and the epoch and training times they imply.

    python benchmarks/resnet_epoch.py                       # the offline profile
    python benchmarks/resnet_epoch.py --profile paper --batches 20
    python benchmarks/resnet_epoch.py --tiny                # width 4, batch 16, 1 batch

Times `--batches` batches of the first PGD run's prepared data after one warm-up batch
(lazy initialization, autotuning, compilation); where that data is not prepared (CIFAR10
and SVHN offline), and always with --tiny, random images of its shape stand in: the
time does not depend on pixel values. Training only: the per-epoch selection attack and
the evaluate / hessian / landscape stages come on top.
"""

from __future__ import annotations

import math
import time

import torch
from common import ROOT, arguments, out_dir, save

from advland.core.config import parse_params
from advland.core.models import build_model, resolve_device
from advland.core.perturb import make_perturb
from advland.data import Dataset, load_prepared
from advland.pipeline.profiles import resolve_profile
from advland.train import fit

# (channels, height, width, training images, classes) of the ResNet profiles' datasets
SHAPES = {
    "mnist": (1, 28, 28, 60000, 10),
    "fashion_mnist": (1, 28, 28, 60000, 10),
    "cifar10": (3, 32, 32, 50000, 10),
    "svhn": (3, 32, 32, 73257, 10),
}


def training_data(dataset: str, n: int | None) -> tuple[Dataset, bool]:
    """The prepared set, or (with n: always) n random stand-ins of its shape; True when real."""
    path = ROOT / "data" / "prepared" / f"{dataset}.npz"
    if n is None and path.is_file():
        return load_prepared(path), True
    c, h, w, n_train, n_classes = SHAPES[dataset]
    x, y = torch.rand(n or n_train, c, h, w), torch.randint(0, n_classes, (n or n_train,))
    return Dataset(x, y, x[:1000], y[:1000], n_classes), False


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument("--profile", default="offline", help="a profile name (profiles/)")
    parser.add_argument("--batches", type=int, default=5)
    args = parser.parse_args()
    params = parse_params(resolve_profile(args.profile, ROOT), source=args.profile)
    run = next(r for r in params.runs.values() if r.model == "resnet18" and r.eps > 0)
    full = params.train_for(run)
    cfg = full.model_copy(update={"epochs": 1})
    batches = args.batches
    if args.tiny:
        model_cfg = cfg.model.model_copy(update={"width": 4})
        cfg, batches = cfg.model_copy(update={"batch_size": 16, "model": model_cfg}), 1
    hw = cfg.hardware
    device = resolve_device(hw.device)
    data, real = training_data(run.dataset, batches * cfg.batch_size if args.tiny else None)
    attack = params.attack_for(run).train
    model = build_model("resnet18", data.x_train.shape[1:], data.n_classes, cfg.model.width)
    model = model.to(device)
    if hw.channels_last:
        model.to(memory_format=torch.channels_last)
    if hw.compile:
        model.forward = torch.compile(model.forward)
    perturb = make_perturb(
        run.noise, run.norm, run.eps, attack, params.noise.distribution, torch.Generator()
    )

    def train_batches(n: int) -> float:
        x = data.x_train[: n * cfg.batch_size].to(device)
        y = data.y_train[: n * cfg.batch_size].to(device)
        t0 = time.perf_counter()
        fit(model, x, y, cfg, perturb, (torch.Generator().manual_seed(0),))
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    train_batches(1)
    per_batch = train_batches(batches) / batches
    n_train = len(data.x_train) if real else SHAPES[run.dataset][3]
    epoch_s = per_batch * math.ceil(min(n_train, cfg.data.n_train or math.inf) / cfg.batch_size)
    runs = [r for r in params.runs.values() if r.model == "resnet18"]
    result = {
        "profile": f"{args.profile}.yaml",
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "setting": f"width {cfg.model.width}, batch {cfg.batch_size}, PGD-{attack.steps} "
        f"training, bf16 {hw.amp}, channels_last {hw.channels_last}, compile {hw.compile}",
        "batches_timed": batches,
        "s_per_batch": per_batch,
        "run": run.run_id,
        "data": "prepared" if real else "random stand-ins",
        "s_per_epoch": epoch_s,
        "epochs": full.epochs,
        "runs": len(runs),
        "training_hours_all_runs": epoch_s * full.epochs * len(runs) / 3600,
    }
    save(f"resnet_epoch_{args.profile}_{device.type}", result, out_dir(args))


if __name__ == "__main__":
    main()
