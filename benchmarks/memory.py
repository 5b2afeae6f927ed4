"""Peak resident memory of each stage of the default pipeline, on its heaviest inputs.

    python benchmarks/memory.py          # after `make reproduce` (report reads all metrics)
    python benchmarks/memory.py --tiny   # train and evaluate one run: toy digits, 1 epoch

Each stage runs as DVC runs it (its cmd in dvc.yaml) in a scratch workspace holding
params.yaml, the prepared data and, for the report, a copy of metrics/ and
landscapes/, so the real outputs are left alone; a stage's models come from the train
stage run there before it. The peak RSS of each process is its ru_maxrss (wait4); the
pipeline's peak is the largest of them (DVC runs stages one at a time).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from common import (
    ROOT,
    arguments,
    out_dir,
    repo_params,
    save,
    stage_argv,
    tiny_params,
    write_params,
    write_toy_mnist2,
)

L2, LINF = "mnist2-lr-l2-adv-1", "mnist2-lr-linf-adv-76p5_255"
STAGES = [
    ("prepare", "mnist2"),
    ("prepare", "fashion_mnist"),
    ("train", L2),
    ("train", LINF),
    ("evaluate", L2),
    ("hessian", LINF),
    ("landscape", L2),
    ("report", None),
]
TINY_STAGES = [("train", L2), ("evaluate", L2)]


def peak_rss_mb(argv: list[str], cwd: Path) -> int:
    """Run argv to the end in cwd; the peak resident memory of its process, in MB."""
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(argv, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        if proc.returncode != 0:
            log.seek(0)
            raise RuntimeError(f"{' '.join(argv)} failed:\n{log.read().decode()[-3000:]}")
    return round(usage.ru_maxrss / 1024)  # KB on Linux


def main() -> None:
    args = arguments(__doc__).parse_args()
    params = repo_params()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.tiny:
            stages = TINY_STAGES
            write_params(work / "params.yaml", tiny_params(params, [L2]))
            write_toy_mnist2(work / "data" / "prepared" / "mnist2.npz")
        else:
            stages = STAGES
            shutil.copy(ROOT / "params.yaml", work / "params.yaml")
            for item in ("data/prepared", "metrics", "landscapes", "reports/paper_values.yaml"):
                src, dst = ROOT / item, work / item
                dst.parent.mkdir(parents=True, exist_ok=True)
                (shutil.copytree if src.is_dir() else shutil.copy)(src, dst)
        rows = []
        for stage, item in stages:
            argv = stage_argv(stage, params.run(item) if item in params.runs else item)
            peak = peak_rss_mb(argv, work)
            rows.append({"stage": stage, "input": item or "all runs", "peak_rss_mb": peak})
            print(rows[-1])
    pipeline_peak = max(r["peak_rss_mb"] for r in rows)
    save("memory", {"rows": rows, "pipeline_peak_rss_mb": pipeline_peak}, out_dir(args))


if __name__ == "__main__":
    main()
