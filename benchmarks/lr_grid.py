"""Benchmark: the default MNIST2 logistic-regression grid, train + evaluate, in one process.

    python benchmarks/lr_grid.py                # the whole grid of params.yaml
    python benchmarks/lr_grid.py --naive        # also the naive-PGD comparison

Part 1 times train_run + evaluate_run for every run of params.yaml (what the train
and evaluate stages do, without DVC's per-process start-up).
Part 2 times the same train_run + evaluate_run on a subset of the grid (one L2 and
one Linf PGD-trained run, default settings) twice: as is, and with advland's PGD
replaced by the obvious implementation (autograd input gradient, separate projection
and clamp, one batch at a time). Each repeat times both, the first of the two
alternating, each in a fresh process after an untimed eps = 0 run. Medians, the
median of the per-repeat ratios, and the largest difference between the two
runs' metrics (the attacks are the same mathematics).
Results go to benchmarks/results/lr_grid.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from unittest.mock import patch

import torch
from common import ROOT, last_line_of, load_params, machine

from advland.config import RunSpec
from advland.data import load_prepared
from advland.evaluate import evaluate_run
from advland.models import per_example_loss
from advland.noise import flat_norm, sample_ball
from advland.train import load_trained, train_run

WARMUP = "mnist2-lr-l2-adv-0"  # first run in a process: imports torch._dynamo (torch.optim)


def naive_pgd(model, x, y, norm, eps, steps, step_size, random_start=True, generator=None):
    """PGD as usually written: autograd for the input gradient, projection, then clamp."""
    if eps == 0:
        return x
    delta = sample_ball(x, norm, eps, generator) if random_start else torch.zeros_like(x)
    x_adv = (x + delta).clamp(0, 1)
    for _ in range(steps):
        x_adv = x_adv.detach().requires_grad_(True)
        with torch.enable_grad():
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


def train_and_evaluate(params, data, run_id: str, directory: Path) -> dict:
    """What the train and evaluate stages do for one run; returns the evaluate metrics."""
    spec = RunSpec.parse(run_id)
    attack = params.attack[spec.dataset][spec.norm]
    checkpoint = directory / f"{run_id}.pt"
    train_run(spec, data, params.train[spec.model], attack, params.noise, params.seed,
              checkpoint, directory / f"{run_id}.csv")  # fmt: skip
    model, _ = load_trained(checkpoint, data)
    return evaluate_run(
        model, spec, data, attack.eval, params.noise, params.seed, params.evaluate.batch_size
    )


def time_grid(params, data) -> dict:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for spec in params.specs():
            t0 = time.perf_counter()
            train_and_evaluate(params, data, spec.run_id, Path(tmp))
            rows.append({"run": spec.run_id, "seconds": time.perf_counter() - t0})
    return {"runs": rows, "total_s": sum(r["seconds"] for r in rows)}


def time_subset(run_ids: list[str], naive: bool) -> dict:
    """In this process: seconds of train + evaluate per run, and the metrics, with our PGD
    or the naive one, after an untimed eps = 0 run (the process's one-time costs)."""
    params = load_params()
    data = load_prepared(ROOT / "data" / "prepared" / "mnist2.npz")
    times, metrics = {}, {}
    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        if naive:
            for module in ("advland.train", "advland.evaluate"):
                stack.enter_context(patch(f"{module}.pgd", naive_pgd))
        train_and_evaluate(params, data, WARMUP, Path(tmp))
        for r in run_ids:
            t0 = time.perf_counter()
            metrics[r] = train_and_evaluate(params, data, r, Path(tmp))
            times[r] = time.perf_counter() - t0
    return {"seconds": times, "metrics": metrics}


def time_subset_in_fresh_process(run_ids: list[str], naive: bool) -> dict:
    return json.loads(last_line_of(__file__, "--subset", *run_ids, *["--as-naive"] * naive))


def compare_with_naive(params, run_ids: list[str], repeats: int) -> dict:
    """Ours and naive, each repeat in fresh processes (as DVC runs a stage, so neither
    inherits the other's allocator state) and the first of the pair alternating, so that
    a slow spell of the machine weighs on both; the ratio is the median of the
    per-repeat ratios."""
    times, metrics = {"ours": [], "naive": []}, {}
    for i in range(repeats):
        for name in ("ours", "naive") if i % 2 == 0 else ("naive", "ours"):
            out = time_subset_in_fresh_process(run_ids, name == "naive")
            times[name].append(out["seconds"])
            metrics[name] = out["metrics"]
    total = {name: [sum(t.values()) for t in ts] for name, ts in times.items()}
    ratios = [n / o for o, n in zip(total["ours"], total["naive"], strict=True)]
    return {
        "runs": run_ids,
        "epochs": params.train["lr"].epochs,
        "repeats": repeats,
        "ours_s": statistics.median(total["ours"]),
        "naive_s": statistics.median(total["naive"]),
        "ours_s_per_run": {r: statistics.median(t[r] for t in times["ours"]) for r in run_ids},
        "naive_s_per_run": {r: statistics.median(t[r] for t in times["naive"]) for r in run_ids},
        "ratio": statistics.median(ratios),
        "ratios": ratios,
        "max_abs_acc_diff": max(
            abs(metrics["ours"][r][k] - metrics["naive"][r][k])
            for r in run_ids
            for k in metrics["ours"][r]
            if k.endswith("_acc")
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--naive", action="store_true", help="also the naive-PGD comparison")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip-grid", action="store_true")
    parser.add_argument("--subset", nargs="+", help=argparse.SUPPRESS)  # one fresh-process timing
    parser.add_argument("--as-naive", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.subset:
        print(json.dumps(time_subset(args.subset, args.as_naive)))
        return
    params = load_params()
    result = {"machine": machine()}
    if not args.skip_grid:
        data = load_prepared(ROOT / "data" / "prepared" / "mnist2.npz")
        result["grid"] = time_grid(params, data)
        print(
            f"grid of {len(params.runs)} runs: train + evaluate {result['grid']['total_s']:.1f} s"
        )
    if args.naive:
        runs = ["mnist2-lr-l2-adv-1", "mnist2-lr-linf-adv-76.5_255"]
        c = result["naive_comparison"] = compare_with_naive(params, runs, args.repeats)
        print(f"{runs}: ours {c['ours_s']:.1f} s, naive {c['naive_s']:.1f} s, ratio "
              f"{c['ratio']:.1f}x (per repeat {', '.join(f'{q:.1f}' for q in c['ratios'])}), "
              f"accuracies differ by at most {c['max_abs_acc_diff']:.3f} points")  # fmt: skip
    out = ROOT / "benchmarks" / "results" / "lr_grid.json"
    out.parent.mkdir(exist_ok=True)
    previous = json.loads(out.read_text()) if out.is_file() else {}
    out.write_text(json.dumps(previous | result, indent=2) + "\n")


if __name__ == "__main__":
    main()
