"""Landscapes of logistic regression: all weight points in one batched computation
(StackedLogisticRegression) against a loop over points with the same code path a net
takes (the model wrapped so it is not recognized as LR: deep copy per point, autograd).

    python benchmarks/landscape_batching.py     # after `make reproduce`
"""

from __future__ import annotations

from functools import partial

import torch
from common import ROOT, median_time, save

from advland.attacks import pgd
from advland.data import load_prepared
from advland.landscape import evaluate_points, filter_normalized_direction
from advland.train import load_trained


def main() -> None:
    data = load_prepared(ROOT / "data" / "prepared" / "mnist2.npz").subset(1000, 1000)
    model, _ = load_trained(ROOT / "models" / "mnist2-lr-linf-adv-76.5_255.pt", data)
    looped = torch.nn.Sequential(model)  # same weights, generic per-point path
    splits = {"train": (data.x_train, data.y_train), "test": (data.x_test, data.y_test)}
    theta = torch.nn.utils.parameters_to_vector(model.parameters()).detach()
    d = filter_normalized_direction(model, torch.Generator().manual_seed(0))
    rows = []
    for label, points in (("1D, 41 points", 41), ("2D, 11x11 points", 121)):
        thetas = theta[None] + torch.linspace(-1, 1, points)[:, None] * d[None]
        fixed = {k: pgd(model, x, y, "linf", 0.3, 20, 0.0375) for k, (x, y) in splits.items()}

        def rerun(m, x, y):
            return pgd(m, x, y, "linf", 0.3, 20, 0.0375, random_start=False)

        for mode, perturb, inputs in (("fixed attack", None, fixed), ("PGD re-run", rerun, None)):
            batched = median_time(
                partial(evaluate_points, model, thetas, splits, perturb, inputs), 3
            )
            loop = median_time(partial(evaluate_points, looped, thetas, splits, perturb, inputs), 3)
            a = evaluate_points(model, thetas, splits, perturb, inputs)
            b = evaluate_points(looped, thetas, splits, perturb, inputs)
            rows.append(
                {
                    "grid": label,
                    "mode": mode,
                    "batched_s": batched,
                    "loop_s": loop,
                    "ratio": loop / batched,
                    "max_abs_diff": float((a - b).abs().max().max()),
                }
            )
    save(
        "landscape_batching",
        {"setting": "MNIST2 LR (Linf 76.5/255), 1000 train + 1000 test images", "rows": rows},
    )


if __name__ == "__main__":
    main()
