"""Benchmark: the default MNIST2 logistic-regression grid, train + evaluate, in one process.

    python benchmarks/lr_grid.py                # the whole grid of params.yaml
    python benchmarks/lr_grid.py --naive 2      # also the naive-PGD comparison, 2 epochs

Part 1 times train_run + evaluate_run for every run of params.yaml (what the train
and evaluate stages do, without DVC's per-process start-up).
Part 2 compares our PGD training step with the obvious implementation (autograd
input gradient, separate projection and clamp, one batch at a time) on the same
subset of the grid, each repeated; medians and their ratio are reported.
Results go to benchmarks/results/lr_grid.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "stages"))
from common import load_params  # noqa: E402

from advland.config import RunSpec  # noqa: E402
from advland.data import load_prepared  # noqa: E402
from advland.evaluate import evaluate_run  # noqa: E402
from advland.models import per_example_loss  # noqa: E402
from advland.noise import flat_norm, sample_ball  # noqa: E402
from advland.train import fit, make_perturb, train_run  # noqa: E402


def naive_pgd(model, x, y, norm, eps, steps, step_size, random_start=True, generator=None):
    """PGD as usually written: autograd for the input gradient, projection, then clamp."""
    if eps == 0:
        return x
    delta = sample_ball(x, norm, eps, generator) if random_start else torch.zeros_like(x)
    x_adv = (x + delta).clamp(0, 1)
    for _ in range(steps):
        x_adv = x_adv.detach().requires_grad_(True)
        loss = per_example_loss(model(x_adv), y).sum()
        (grad,) = torch.autograd.grad(loss, x_adv)
        if norm == "linf":
            x_adv = x_adv + step_size * grad.sign()
            delta = (x_adv - x).clamp(-eps, eps)
        else:
            x_adv = x_adv + step_size * grad / flat_norm(grad).clamp_min(1e-12)
            delta = x_adv - x
            delta = delta * (eps / flat_norm(delta).clamp_min(1e-12)).clamp(max=1)
        x_adv = (x + delta).clamp(0, 1)
    return x_adv.detach()


def time_grid(params, data) -> dict:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for spec in params.specs():
            attack = params.attack[spec.dataset][spec.norm]
            t0 = time.perf_counter()
            train_run(spec, data, params.train[spec.model], attack, params.noise, params.seed,
                      Path(tmp) / "m.pt", Path(tmp) / "log.csv")  # fmt: skip
            t1 = time.perf_counter()
            from advland.train import load_trained

            model, _ = load_trained(Path(tmp) / "m.pt", data)
            evaluate_run(
                model,
                spec,
                data,
                attack.eval,
                params.noise,
                params.seed,
                params.evaluate.batch_size,
            )
            rows.append(
                {"run": spec.run_id, "train_s": t1 - t0, "evaluate_s": time.perf_counter() - t1}
            )
    return {"runs": rows, "total_s": sum(r["train_s"] + r["evaluate_s"] for r in rows)}


def time_training(params, data, run_id: str, epochs: int, naive: bool, repeats: int) -> float:
    """Median seconds of `epochs` epochs of PGD training for one run."""
    import advland.train as train_mod

    spec = RunSpec.parse(run_id)
    cfg = params.train[spec.model].model_copy(update={"epochs": epochs})
    attack = params.attack[spec.dataset][spec.norm].train
    times = []
    for _ in range(repeats):
        gen = torch.Generator().manual_seed(0)
        if naive:
            step = attack.step(spec.eps)

            def perturb(m, x, y, step=step, gen=gen):
                return naive_pgd(m, x, y, spec.norm, spec.eps, attack.steps, step, True, gen)
        else:
            perturb = make_perturb(spec, attack, params.noise.distribution, gen)
        model = train_mod.build_model(spec.model, tuple(data.x_train.shape[1:]), 2)
        t0 = time.perf_counter()
        fit(model, data.x_train, data.y_train, cfg, perturb, (torch.Generator().manual_seed(0),))
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--naive", type=int, default=0, help="epochs for the naive comparison (0: skip)"
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-grid", action="store_true")
    args = parser.parse_args()
    params = load_params(ROOT / "params.yaml")
    data = load_prepared(ROOT / "data" / "prepared" / "mnist2.npz")
    result = {"machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
                         f"torch {torch.__version__}"}  # fmt: skip
    if not args.skip_grid:
        result["grid"] = time_grid(params, data)
        print(
            f"grid of {len(params.runs)} runs: train + evaluate {result['grid']['total_s']:.1f} s"
        )
    if args.naive:
        comparison = []
        for run_id in ("mnist2-lr-linf-adv-76.5_255", "mnist2-lr-l2-adv-1"):
            ours = time_training(
                params, data, run_id, args.naive, naive=False, repeats=args.repeats
            )
            naive = time_training(
                params, data, run_id, args.naive, naive=True, repeats=args.repeats
            )
            comparison.append({"run": run_id, "epochs": args.naive, "ours_s": ours, "naive_s": naive,
                               "ratio": naive / ours})  # fmt: skip
            print(f"{run_id}: ours {ours:.2f} s, naive {naive:.2f} s, ratio {naive / ours:.1f}x")
        result["naive_comparison"] = comparison
    out = ROOT / "benchmarks" / "results" / "lr_grid.json"
    out.parent.mkdir(exist_ok=True)
    previous = json.loads(out.read_text()) if out.is_file() else {}
    out.write_text(json.dumps(previous | result, indent=2) + "\n")


if __name__ == "__main__":
    main()
