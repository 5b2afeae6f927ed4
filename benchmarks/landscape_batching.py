"""Landscapes of logistic regression: advland.measure.landscape.evaluate_points, which takes all
weight points in one batched computation, against the obvious loop over points (one
model per point, each split in one piece), on the same points, in both objective modes.

    python benchmarks/landscape_batching.py          # needs data/prepared/mnist2.npz
    python benchmarks/landscape_batching.py --tiny   # toy digits, 5 and 3x3 points

The model (MNIST2 LR, Linf 76.5/255) is trained here as its train stage trains it; the
points, data subset and PGD are params.yaml's `landscape` settings, PGD without its
random start so that both sides attack from the same point.
"""

from __future__ import annotations

import copy
import tempfile
from functools import partial
from pathlib import Path

import pandas as pd
import torch
from common import (
    arguments,
    median_times,
    mnist2,
    out_dir,
    repo_params,
    save,
    tiny_params,
    trained_model,
)
from torch import nn
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from advland.core.models import per_example_loss, predict
from advland.core.perturb import Perturb, make_perturb
from advland.measure.landscape import (
    evaluate_points,
    filter_normalized_direction,
    fixed_objective_inputs,
)

RUN = "mnist2-lr-linf-adv-76p5_255"


@torch.no_grad()
def loop_points(
    model: nn.Module,
    thetas: torch.Tensor,
    splits: dict,
    perturb: Perturb | None,
    fixed_inputs: dict | None,
) -> pd.DataFrame:
    """evaluate_points' table, one point at a time: a copy of the model per point."""
    rows = []
    for theta in thetas:
        m = copy.deepcopy(model)
        vector_to_parameters(theta, m.parameters())
        row = {}
        for split, (x, y) in splits.items():
            x_obj = fixed_inputs[split] if fixed_inputs else perturb(m, x, y)
            for kind, inputs in (("clean", x), ("obj", x_obj)):
                logits = m(inputs)
                row[f"{split}_{kind}_loss"] = per_example_loss(logits, y).mean().item()
                row[f"{split}_{kind}_acc"] = 100 * (predict(logits) == y).float().mean().item()
        rows.append(row)
    return pd.DataFrame(rows)


def main() -> None:
    args = arguments(__doc__).parse_args()
    params = repo_params()
    repeats = 3
    if args.tiny:
        params, repeats = tiny_params(params, [RUN]), 1
    cfg = params.landscape_for(params.run(RUN))
    data = mnist2(args.tiny)
    with tempfile.TemporaryDirectory() as tmp:
        model = trained_model(params, RUN, data, Path(tmp))
    data = data.subset(cfg.n_train, cfg.n_test)
    splits = {"train": (data.x_train, data.y_train), "test": (data.x_test, data.y_test)}
    run = params.run(RUN)
    pgd_cfg = cfg.pgd.model_copy(update={"random_start": False})
    perturb = make_perturb(run.noise, run.norm, run.eps, pgd_cfg, params.noise.distribution, None)
    fixed = fixed_objective_inputs(model, splits, perturb)
    theta = parameters_to_vector(model.parameters()).detach()
    d = filter_normalized_direction(model, torch.Generator().manual_seed(cfg.direction_seed))
    rows = []
    grids = {
        f"1D, {cfg.points_1d} points": cfg.points_1d,
        f"2D, {cfg.points_2d}x{cfg.points_2d} points": cfg.points_2d**2,
    }
    for grid, points in grids.items():
        thetas = theta[None] + torch.linspace(-cfg.alpha, cfg.alpha, points)[:, None] * d[None]
        for mode, pert, inputs in (("fixed attack", None, fixed), ("PGD re-run", perturb, None)):
            batched = partial(evaluate_points, model, thetas, splits, pert, inputs)
            loop = partial(loop_points, model, thetas, splits, pert, inputs)
            times = median_times({"batched": batched, "loop": loop}, repeats)
            a, b = batched(), loop()
            rows.append(
                {
                    "grid": grid,
                    "mode": mode,
                    "batched_s": times["batched"],
                    "loop_s": times["loop"],
                    "ratio": times["loop"] / times["batched"],
                    "max_abs_diff": float((a - b[a.columns]).abs().max().max()),
                }
            )
    setting = (
        f"MNIST2 LR {RUN}, {len(data.x_train)} train + {len(data.x_test)} test images, "
        f"PGD-{pgd_cfg.steps} without random start"
    )
    save("landscape_batching", {"setting": setting, "rows": rows}, out_dir(args))


if __name__ == "__main__":
    main()
