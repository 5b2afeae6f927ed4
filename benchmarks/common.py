"""Timing helpers shared by the benchmark scripts."""

from __future__ import annotations

import importlib.util
import json
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def load_params(path: Path = ROOT / "params.yaml"):
    """A params file read as the stages read it (stages/common.py: load_params)."""
    spec = importlib.util.spec_from_file_location("stage_common", ROOT / "stages" / "common.py")
    stage_common = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stage_common)
    return stage_common.load_params(path)


def machine() -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.machine(),
    )
    return f"{cpu}, {torch.get_num_threads()} torch threads, torch {torch.__version__}"


def median_times(
    fns: dict[str, Callable[[], object]], repeats: int = 5, warmup: int = 1
) -> dict[str, float]:
    """Median seconds of each fn over `repeats` rounds after `warmup` untimed ones; the
    fns take turns within every round, so a slow spell of the machine weighs on all."""
    times = {name: [] for name in fns}
    for i in range(warmup + repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            if i >= warmup:
                times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) for name, t in times.items()}


def median_time(fn: Callable[[], object], repeats: int = 5, warmup: int = 1) -> float:
    return median_times({"fn": fn}, repeats, warmup)["fn"]


def last_line_of(*args: str, env: dict | None = None) -> str:
    """Run `python *args` in a fresh process; the last line it prints."""
    out = subprocess.run(
        [sys.executable, *args], env=env, check=True, capture_output=True, text=True
    )
    return out.stdout.strip().splitlines()[-1]


def save(name: str, result: dict) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(
        json.dumps({"machine": machine(), **result}, indent=2) + "\n"
    )
    print(json.dumps(result, indent=2))
