"""Benchmark: the default MNIST2 logistic-regression grid, train + evaluate, in one process.

    python benchmarks/lr_grid.py            # every untagged logistic-regression run
    python benchmarks/lr_grid.py --tiny     # one run per family, 1 epoch, toy digits

Times what the train and evaluate stages do for each run (train_seeds, then
evaluate_seeds), without DVC's per-process start-up (see stage_overhead.py).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from common import arguments, mnist2, out_dir, repo_params, save, tiny_params, train_and_evaluate


def main() -> None:
    args = arguments(__doc__).parse_args()
    params = repo_params()
    run_ids = [i for i, r in params.runs.items() if r.model == "lr" and r.tag is None]
    if args.tiny:  # the last run of each family: the largest eps of each norm and noise
        run_ids = list({params.runs[i].family: i for i in run_ids}.values())
        params = tiny_params(params, run_ids)
    data = mnist2(args.tiny)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for run_id in run_ids:
            t0 = time.perf_counter()
            train_and_evaluate(params, data, run_id, Path(tmp))
            rows.append({"run": run_id, "seconds": time.perf_counter() - t0})
    total = sum(r["seconds"] for r in rows)
    print(f"grid of {len(rows)} runs: train + evaluate {total:.1f} s")
    save("lr_grid", {"runs": rows, "total_s": total}, out_dir(args))


if __name__ == "__main__":
    main()
