"""Top-3 Hessian eigenvalues: exact (dense) vs Lanczos vs PyHessian at its defaults, on
the trained MNIST2 logistic regression (785 parameters, L2 eps 1 and Linf 76.5/255)
and on a small CNN whose Hessian can be formed. Relative error of the top 3 and HVPs.

    python benchmarks/hessian_backends.py          # needs data/prepared/mnist2.npz
    python benchmarks/hessian_backends.py --tiny   # toy digits, 1-epoch LRs, 2 starts

The LR models are trained here, as their train stages train them. Lanczos is run with
the fewest iterations (= HVPs) that reach 1e-3 relative error on all top-3 (searched
from 3 up), and at 20 iterations. Both methods start from random vectors, so both are
run from 10 seeds: the ratio is that of the median HVP counts.
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path

import torch
from common import (
    arguments,
    median_time,
    mnist2,
    out_dir,
    repo_params,
    save,
    tiny_params,
    trained_model,
)

from advland.measure.hessian import (
    CountingHVP,
    exact_spectrum,
    flat_objective,
    lanczos,
    make_hvp,
    pyhessian_top,
)

RUNS = ("mnist2-lr-l2-adv-1", "mnist2-lr-linf-adv-76p5_255")


def small_cnn(channels: int) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, channels, 5, stride=2),
        torch.nn.Tanh(),
        torch.nn.Flatten(),
        torch.nn.Linear(channels * 12 * 12, 2),
    )


def compare(
    name: str, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, starts: int, repeats: int
) -> dict:
    model = model.double().eval()
    x = x.double()
    loss, theta = flat_objective(model, x, y)
    spectrum = exact_spectrum(loss, theta, 3)
    exact = torch.tensor(spectrum["top"], dtype=torch.float64)

    def rel_err(top) -> float:
        return (
            ((torch.as_tensor(top, dtype=torch.float64) - exact).abs() / exact.abs()).max().item()
        )

    def lanczos_hvps(seed: int) -> int:
        return next(
            k
            for k in range(3, 200)
            if rel_err(lanczos(make_hvp(loss, theta), theta.numel(), 3, k, seed=seed)) < 1e-3
        )

    seeds = []
    for seed in range(starts):
        ref = pyhessian_top(model, x, y, 3, seed=seed)
        seeds.append(
            {
                "seed": seed,
                "lanczos_hvps": lanczos_hvps(seed),
                "pyhessian_hvps": ref["hvps"],
                "pyhessian_top3": ref["top"],
                "pyhessian_rel_err": rel_err(ref["top"]),
            }
        )
    hvp = CountingHVP(make_hvp(loss, theta))
    lanczos(hvp, theta.numel(), 3, seeds[0]["lanczos_hvps"])
    assert hvp.calls == seeds[0]["lanczos_hvps"]  # one HVP per iteration

    def median(key: str) -> float:
        return statistics.median(r[key] for r in seeds)

    return {
        "model": name,
        "parameters": theta.numel(),
        "exact_top3": exact.tolist(),
        "exact_min": torch.linalg.eigvalsh(spectrum["hessian"])[0].item(),
        "seeds": seeds,
        "lanczos_hvps_median": median("lanczos_hvps"),
        "lanczos_hvps_range": [
            min(r["lanczos_hvps"] for r in seeds),
            max(r["lanczos_hvps"] for r in seeds),
        ],
        "lanczos20_rel_err": rel_err(lanczos(make_hvp(loss, theta), theta.numel(), 3, 20)),
        "pyhessian_hvps_median": median("pyhessian_hvps"),
        "pyhessian_rel_err_median": median("pyhessian_rel_err"),
        "hvp_ratio_lanczos_over_pyhessian": median("lanczos_hvps") / median("pyhessian_hvps"),
        "exact_s": median_time(lambda: exact_spectrum(loss, theta, 3), repeats),
    }


def main() -> None:
    args = arguments(__doc__).parse_args()
    params, starts, repeats, channels, n_cnn = repo_params(), 10, 3, 4, 2000
    if args.tiny:
        params, starts, repeats, channels, n_cnn = tiny_params(params, RUNS), 2, 1, 1, 64
    data = mnist2(args.tiny)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for run_id in RUNS:
            model = trained_model(params, run_id, data, Path(tmp))
            x, y = data.x_train, data.y_train
            rows.append(compare(f"LR {run_id} (clean inputs)", model, x, y, starts, repeats))
    x, y = data.x_train[:n_cnn], data.y_train[:n_cnn]
    name = f"small CNN ({len(x)} MNIST2 images)"
    rows.append(compare(name, small_cnn(channels), x, y, starts, repeats))
    save("hessian_backends", {"rows": rows}, out_dir(args))


if __name__ == "__main__":
    main()
