"""Print the README's benchmark table from benchmarks/results/*.json.

python benchmarks/table.py
"""

from __future__ import annotations

import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def load(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def main() -> None:
    rows = []
    if grid := load("lr_grid"):
        rows.append(
            (
                f"LR grid: train + evaluate, {len(grid['grid']['runs'])} runs, one process",
                f"{grid['grid']['total_s']:.0f} s",
                "target ≤ 180 s",
            )
        )
        if c := grid.get("naive_comparison"):
            rows.append(
                (
                    f"LR train + evaluate, {' and '.join(c['runs'])} ({c['epochs']} epochs): "
                    "advland vs PGD as a naive autograd loop",
                    f"{c['ours_s']:.1f} s vs {c['naive_s']:.1f} s; per run "
                    + ", ".join(
                        f"{r} {c['ours_s_per_run'][r]:.1f} s vs {c['naive_s_per_run'][r]:.1f} s"
                        for r in c["runs"]
                    )
                    + f" (accuracies differ by ≤ {c['max_abs_acc_diff']:.2f} points)",
                    f"**{c['ratio']:.1f}×**, median of {c['repeats']} paired repeats "
                    f"({min(c['ratios']):.1f}–{max(c['ratios']):.1f}×); target ≥ 10×",
                )
            )
    if comp := load("linear_pgd_compile"):
        for r in comp["rows"]:
            rows.append(
                (
                    f"L2 PGD on LR, {r['setting']}: eager vs `torch.compile` of linear_steps "
                    "vs its loop in C",
                    f"{r['eager_s'] * 1e3:.2f} ms vs {r['compiled_s'] * 1e3:.2f} ms vs "
                    f"{r['c_loop_s'] * 1e3:.2f} ms per batch (C differs by "
                    f"{r['c_loop_max_abs_diff']:.1e}); compile per stage process "
                    f"{r['compile_cold_s']:.1f} s cold, {r['compile_warm_s']:.1f} s warm",
                    f"**{r['eager_s'] / r['compiled_s']:.2f}×** compiled, "
                    f"**{r['eager_s'] / r['c_loop_s']:.2f}×** C, per batch; the compile pays "
                    f"back after {r['break_even_batches'] or '∞'} batches, a stage has "
                    f"{r['batches_per_stage']}",
                )
            )
        if c := comp.get("with_c_loop"):
            rows.append(
                (
                    "LR naive comparison above, had the L2 run's PGD loop been in C "
                    "(projected: our seconds less the C loop's saving over a train and an "
                    "evaluate stage)",
                    f"{c['ours_s']:.1f} s (saves {c['saved_s']:.1f} s) vs {c['naive_s']:.1f} s",
                    f"**{c['ratio']:.1f}×** (target ≥ 10×)",
                )
            )
    if pgd := load("pgd_vs_torchattacks"):
        rows.append(
            (
                f"PGD vs torchattacks 3.5.1: {pgd['setting']}",
                f"{pgd['advland_s']:.3f} s vs {pgd['torchattacks_s']:.3f} s; outputs identical: "
                f"{pgd['identical']} (max diff {pgd['max_abs_diff_same_start']:.1e})",
                f"**{pgd['throughput_ratio']:.2f}×** (target ≥ 1)",
            )
        )
    if hess := load("hessian_backends"):
        for r in hess["rows"]:
            lo, hi = r["lanczos_hvps_range"]
            ph = [s["pyhessian_hvps"] for s in r["seeds"]]
            rows.append(
                (
                    f"Hessian top-3: {r['model']}, {r['parameters']} params",
                    f"median over {len(r['seeds'])} random starts: Lanczos "
                    f"{r['lanczos_hvps_median']:g} HVPs ({lo}–{hi}) to reach rel. err 1e-3; "
                    f"PyHessian {r['pyhessian_hvps_median']:g} HVPs ({min(ph)}–{max(ph)}), "
                    f"rel. err {r['pyhessian_rel_err_median']:.1e}; exact {r['exact_s']:.1f} s",
                    f"**{r['hvp_ratio_lanczos_over_pyhessian']:.2f}** of PyHessian's HVPs "
                    "(target ≤ 0.33 at 1e-3)",
                )
            )
    if land := load("landscape_batching"):
        for r in land["rows"]:
            rows.append(
                (
                    f"LR landscape {r['grid']}, {r['mode']}: batched vs per-point loop",
                    f"{r['batched_s']:.3f} s vs {r['loop_s']:.3f} s (max diff {r['max_abs_diff']:.1e})",
                    f"**{r['ratio']:.1f}×**",
                )
            )
    if mem := load("memory"):
        worst = max(mem["rows"], key=lambda r: r["peak_rss_mb"])
        rows.append(
            (
                "Peak RSS of the default pipeline (largest stage)",
                f"{mem['pipeline_peak_rss_mb']} MB ({worst['stage']} {worst['input']})",
                ", ".join(f"{r['stage']} {r['peak_rss_mb']}" for r in mem["rows"]),
            )
        )
    for path in sorted(RESULTS.glob("resnet_epoch_*.json")):
        r = json.loads(path.read_text())
        rows.append(
            (
                f"ResNet18 training, `{r['profile']}` on {r['device']}: {r['setting']}, "
                f"{r['run']} ({r['data']})",
                f"{r['s_per_batch']:.2f} s per batch, {r['s_per_epoch'] / 60:.0f} min per epoch",
                f"{r['training_hours_all_runs']:.0f} h to train its {r['runs']} runs "
                f"× {r['epochs']} epochs",
            )
        )
    machine = next((d["machine"] for d in map(load, ["hessian_backends", "lr_grid"]) if d), "")
    print(f"Measured on: {machine}, one run each (medians of repeats inside).\n")
    print("| comparison | measured | ratio / result |\n|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
