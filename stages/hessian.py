"""hessian: top-k eigenvalues and trace of one trained model's training objective."""

import sys
from pathlib import Path
from time import perf_counter

import torch
from common import load_params, run_stage, write_metrics

from advland.data import load_prepared
from advland.hessian import sharpness_run
from advland.train import load_trained, make_perturb


def main() -> None:
    start = perf_counter()
    params = load_params()
    spec = params.run(sys.argv[1])
    data = load_prepared(Path(f"data/prepared/{spec.dataset}.npz"))
    model, ckpt = load_trained(
        Path(f"models/{spec.run_id}.pt"), data, params.train_for(spec).device
    )
    n = params.hessian.n_samples
    gen = torch.Generator().manual_seed(params.seed + 3)
    perturb = make_perturb(
        spec, params.attack[spec.dataset][spec.norm].train, params.noise.distribution, gen
    )
    result = sharpness_run(
        model,
        spec,
        data.x_train[:n],
        data.y_train[:n],
        perturb,
        params.hessian,
        ckpt["weight_norm"],
    )
    write_metrics(f"metrics/hessian/{spec.run_id}.json", result, start)


if __name__ == "__main__":
    run_stage(main)
