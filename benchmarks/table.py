"""Print the README's benchmark table from benchmarks/results/*.json.

python benchmarks/table.py
python benchmarks/table.py --results /tmp/tiny    # from the JSON of --tiny runs
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--results", type=Path, default=Path(__file__).resolve().parent / "results")
    results = parser.parse_args().results

    def load(name: str) -> dict | None:
        path = results / f"{name}.json"
        return json.loads(path.read_text()) if path.is_file() else None

    rows = []
    if grid := load("lr_grid"):
        rows.append(
            (
                f"LR grid: train + evaluate, {len(grid['runs'])} runs, one process",
                f"{grid['total_s']:.0f} s",
                "target ≤ 180 s",
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
    if flat := load("flatness_cost"):
        for r in flat["rows"]:
            hvps = r["hvps"]
            rows.append(
                (
                    f"Flatness suite: {r['run']}, {r['parameters']} params, {r['n_train']} images",
                    ", ".join(f"{k} {v:.2f} s" for k, v in r["measure_s"].items())
                    + f" (own target); adaptive Hessian {hvps.get('adaptive_lanczos_and_hutchinson')}"
                    f" HVPs vs PyHessian's plain top-1 {hvps.get('pyhessian_top1_plain')}",
                    f"**{r['suite_s']:.1f} s** per seed, {len(r['targets'])} targets",
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
    if deep := load("deep_scale"):
        rows.append(
            (
                f"Deep family per batch ({deep['setting']})",
                "; ".join(
                    f"{r['model']} w{r['width']} ({r['parameters']} params): "
                    f"{r['forward_input_grad_ms']:.0f} ms forward + input gradient, "
                    f"{r['pgd_train_step_ms']:.0f} ms PGD training step"
                    for r in deep["rows"]
                ),
                "CPU scale of issue 15",
            )
        )
        hvp = {(r["dtype"], r["method"]): r["s"] for r in deep["hvp"]}
        old, new = (
            hvp[("float64", "forward_over_reverse")],
            hvp[("float32", "reverse_over_reverse")],
        )
        rows.append(
            (
                "CNN Hessian-vector product: float32 reverse-over-reverse vs float64 "
                "forward-over-reverse",
                f"{new:.2f} s vs {old:.2f} s",
                f"**{old / new:.1f}×**",
            )
        )
    if regime := load("regime_candidates"):
        peak, choice = regime["peak"], regime["choice"]
        rows.append(
            (
                f"Regime-map candidates: this machine's peak, {peak['what']} timed in turns "
                f"with the candidates' steps; a step is {regime['setting']}",
                f"{peak['ms']:.1f} ms",
                f"**{peak['gflops']:.0f} GFLOP/s**",
            )
        )
        for r in regime["rows"]:
            epochs = ", ".join(f"{n} images {s:.2f} s" for n, s in r["epoch_s"].items())
            bar = choice["bar_fraction_of_peak"]
            rows.append(
                (
                    f"Regime-map candidate {r['name']}: {r['architecture']}, "
                    f"{r['parameters']} params",
                    f"{r['step_ms']:.1f} ms per step, {r['step_flops'] / 1e9:.2f} GFLOP, "
                    f"{r['gflops']:.1f} GFLOP/s; per epoch: {epochs}",
                    f"**{r['fraction_of_peak']:.0%}** of peak "
                    f"({'reaches' if r['name'] in choice['reach_bar'] else 'below'} "
                    f"the {bar:.0%} bar)",
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
    if over := load("stage_overhead"):
        now, cached = over["as_is"], over["bytecode_cache"]

        def largest(imports: dict) -> str:
            return ", ".join(f"{k} {v:.1f} s" for k, v in list(imports["packages_s"].items())[:3])

        rows.append(
            (
                "Fixed cost of a stage: `stages/evaluate.py` with 8 + 8 images to evaluate, "
                f"median of {over['repeats']}; as is"
                + ("" if over["torch_pyc_present"] else " (the venv has no .pyc files)")
                + " vs with a bytecode cache",
                f"fresh process {now['stage_wall_s']:.1f} s vs {cached['stage_wall_s']:.1f} s, "
                f"through `advland.pipeline.warm` {now['stage_warm_wall_s']:.2f} s vs "
                f"{cached['stage_warm_wall_s']:.2f} s; the stage's own work "
                f"{now['stage_main_s']:.2f} s; imports {now['imports']['total_s']:.1f} s "
                f"({largest(now['imports'])}) vs {cached['imports']['total_s']:.1f} s "
                f"({largest(cached['imports'])}); `import torch` alone "
                f"{now['torch_import_s']:.1f} s vs {cached['torch_import_s']:.1f} s",
                f"**{now['stage_wall_s'] - now['stage_main_s']:.1f} s** of start-up per fresh "
                f"stage process, {now['stage_warm_wall_s'] - now['stage_main_s']:.2f} s warm",
            )
        )
        rows.append(
            (
                "First `torch.optim.SGD(...).step()` in a process (imports torch._dynamo: "
                f"{now['first_sgd_step']['imports_dynamo']}) vs the second; as is vs with a "
                "bytecode cache",
                f"{now['first_sgd_step']['first_s']:.1f} s vs "
                f"{now['first_sgd_step']['second_s'] * 1e3:.2f} ms; "
                f"{cached['first_sgd_step']['first_s']:.1f} s vs "
                f"{cached['first_sgd_step']['second_s'] * 1e3:.2f} ms",
                "paid by every train stage run in a fresh process",
            )
        )
        rows.append(
            (
                "No-op `dvc repro` (all up to date) in a scratch repo of `echo` stages; as is "
                "vs with a bytecode cache",
                "; ".join(
                    f"{n} stages {now['dvc_noop_repro_s'][n]:.1f} s vs {t:.1f} s"
                    for n, t in cached["dvc_noop_repro_s"].items()
                ),
                "DVC's own cost per `dvc repro`",
            )
        )
    for name, what, target in (
        (
            "cold_repro_lr_grid",
            "the LR grid (untagged LR runs; with prepare, toy, a tiny LR fine-tuning, report)",
            5,
        ),
        ("cold_repro", "the whole default pipeline", 25),
    ):
        if cold := load(name):
            rows.append(
                (
                    f"Cold `dvc repro` in a fresh clone: {what}, {cold['stages_run']} stages",
                    f"{cold['wall_s']:.0f} s: stages' own work "
                    + ", ".join(f"{k} {v:.0f} s" for k, v in cold["work_s"].items())
                    + f"; the rest {cold['rest_s']:.0f} s (other stages, start-up, DVC)",
                    f"**{cold['wall_s'] / 60:.1f} min**"
                    + (f" (target ≤ {target} min)" if target else ""),
                )
            )
    if setup := load("setup_time"):
        rows.append(
            (
                "Set-up: `uv sync --frozen` with bytecode, fresh machine (empty uv cache) vs a "
                "second clone",
                f"{setup['fresh_machine']:.0f} s vs {setup['second_clone']:.0f} s",
                "before uv: 2 min vs 3 s (shared venv)",
            )
        )
    for path in sorted(results.glob("resnet_epoch_*.json")):
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
    machine = next(
        (json.loads(p.read_text())["machine"] for p in sorted(results.glob("*.json"))), ""
    )
    print(f"Measured on: {machine}, one run each (medians of repeats inside).\n")
    print("| comparison | measured | ratio / result |\n|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
