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
        g = grid["grid"]
        train = sum(r["train_s"] for r in g["runs"])
        rows.append(
            (
                "LR grid: train + evaluate, 28 runs, one process",
                f"{g['total_s']:.0f} s "
                f"(train {train:.0f} s, evaluate {g['total_s'] - train:.0f} s)",
                "target ≤ 180 s",
            )
        )
        for c in grid.get("naive_comparison", []):
            rows.append(
                (
                    f"PGD training vs naive autograd loop: {c['run']}, {c['epochs']} epochs",
                    f"{c['ours_s']:.2f} s vs {c['naive_s']:.2f} s",
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
            rows.append(
                (
                    f"Hessian top-3: {r['model']}, {r['parameters']} params",
                    f"Lanczos {r['lanczos_hvps']} HVPs, rel. err {r['lanczos_rel_err']:.1e}; "
                    f"PyHessian {r['pyhessian_hvps']} HVPs, rel. err {r['pyhessian_rel_err']:.1e}; "
                    f"exact {r['exact_s']:.1f} s",
                    f"**{r['hvp_ratio_lanczos_over_pyhessian']:.2f}** of PyHessian's HVPs (target ≤ 0.33 at 1e-3)",
                )
            )
    if land := load("landscape_batching"):
        for r in land["rows"]:
            rows.append(
                (
                    f"LR landscape {r['grid']}, {r['mode']}: batched vs per-point loop",
                    f"{r['batched_s']:.2f} s vs {r['loop_s']:.2f} s (max diff {r['max_abs_diff']:.1e})",
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
    machine = next((d["machine"] for d in map(load, ["hessian_backends", "lr_grid"]) if d), "")
    print(f"Measured on: {machine}, one run each (medians of repeats inside).\n")
    print("| comparison | measured | ratio / result |\n|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
