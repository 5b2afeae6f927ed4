"""Peak resident memory of each stage of the default pipeline, on its heaviest inputs.

    python benchmarks/memory.py      # after `make reproduce`

Each stage script runs in a scratch copy of the workspace (params.yaml, prepared
data, models), so the real outputs are left alone; /usr/bin/time -f %M gives the
peak RSS of the process. The pipeline's peak is the largest of them (DVC runs
stages one at a time).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from common import ROOT, save

STAGES = [
    ("prepare", "mnist2"),
    ("prepare", "fashion_mnist"),
    ("train", "mnist2-lr-l2-adv-1"),
    ("evaluate", "mnist2-lr-l2-adv-1"),
    ("hessian", "mnist2-lr-linf-adv-76.5_255"),
    ("landscape", "mnist2-lr-l2-adv-1"),
    ("report", None),
]


def main() -> None:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for item in (
            "params.yaml",
            "data/prepared",
            "models",
            "metrics",
            "landscapes/1d",
            "reports/paper_values.yaml",
        ):
            src, dst = ROOT / item, work / item
            dst.parent.mkdir(parents=True, exist_ok=True)
            (shutil.copytree if src.is_dir() else shutil.copy)(src, dst)
        for stage, arg in STAGES:
            cmd = [
                "/usr/bin/time",
                "-f",
                "%M",
                sys.executable,
                str(ROOT / "stages" / f"{stage}.py"),
            ]
            done = subprocess.run(
                cmd + ([arg] if arg else []), cwd=work, capture_output=True, text=True
            )
            assert done.returncode == 0, done.stderr[-2000:]
            peak_mb = int(done.stderr.strip().splitlines()[-1]) / 1024
            rows.append({"stage": stage, "input": arg or "all runs", "peak_rss_mb": round(peak_mb)})
            print(rows[-1])
    save("memory", {"rows": rows, "pipeline_peak_rss_mb": max(r["peak_rss_mb"] for r in rows)})


if __name__ == "__main__":
    main()
