"""landscape: filter-normalized 1D curve and 2D surface of one trained model."""

import sys
from pathlib import Path
from time import perf_counter

import torch
from common import load_params, run_stage, write_metrics

from advland.data import load_prepared
from advland.landscape import landscape_run, partial_path
from advland.sources import file_digest
from advland.train import load_trained, make_perturb


def main() -> None:
    start = perf_counter()
    params = load_params()
    cfg = params.landscape
    spec = params.run(sys.argv[1])
    data = load_prepared(Path(f"data/prepared/{spec.dataset}.npz")).subset(cfg.n_train, cfg.n_test)
    checkpoint = Path(f"models/{spec.run_id}.pt")
    model, _ = load_trained(checkpoint, data, params.train_for(spec).device)
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(params.seed + 4)
    perturb = make_perturb(spec, cfg.pgd, params.noise.distribution, gen)
    summary = landscape_run(
        model,
        {
            "train": (data.x_train.to(device), data.y_train.to(device)),
            "test": (data.x_test.to(device), data.y_test.to(device)),
        },
        perturb,
        rerun=cfg.attack == "rerun" and spec.noise == "adv",
        cfg=cfg,
        out_1d=Path(f"landscapes/1d/{spec.run_id}.csv"),
        out_2d=Path(f"landscapes/2d/{spec.run_id}.csv"),
        partial=partial_path(
            Path("landscapes/.partial"), spec.run_id, file_digest(checkpoint), cfg.model_dump()
        ),
    )
    write_metrics(f"metrics/landscape/{spec.run_id}.json", summary, start)


if __name__ == "__main__":
    run_stage(main)
