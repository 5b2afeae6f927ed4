"""What the benchmark scripts share: command line, params, data, timing, results.

Every script takes --tiny (the same code on toy data, a tiny model and few repeats: a
smoke test that takes seconds) and --out (where its JSON goes; default
benchmarks/results, which holds the real measurements, or a new temporary folder
with --tiny).
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import yaml
from torch import nn

from advland.core.config import Params, Run, load_params, parse_params
from advland.core.models import checkpoint_path, load_model
from advland.data import Dataset, load_prepared
from advland.measure.evaluate import evaluate_seeds
from advland.train import train_seeds

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
TINY_N = 256  # examples per split in --tiny mode


def arguments(doc: str) -> argparse.ArgumentParser:
    """A parser with the options every script takes; the script's docstring as help."""
    parser = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tiny", action="store_true", help="seconds-long smoke run on toy data")
    parser.add_argument("--out", type=Path, help="folder for the JSON (default: see above)")
    return parser


def out_dir(args: argparse.Namespace) -> Path:
    if args.out is not None:
        return args.out
    return Path(tempfile.mkdtemp(prefix="advland-bench-")) if args.tiny else RESULTS


def repo_params() -> Params:
    """This repository's params.yaml, read as the stages read it."""
    return load_params(ROOT / "params.yaml")


def tiny_params(params: Params, run_ids: Sequence[str], n: int = TINY_N) -> Params:
    """`params` cut to `run_ids`, one epoch, and n examples wherever a stage takes a subset."""
    raw = params.model_dump()
    raw["runs"] = {r: raw["runs"][r] for r in run_ids}
    raw["companion"]["linear"] = {}  # its stages read models of runs cut here
    raw["finetune"] = None
    for models in raw["train"].values():
        for cfg in models.values():
            cfg["epochs"] = 1
    for section, subset in (
        ("evaluate", {"n_train": n, "n_test": n}),
        ("hessian", {"n_samples": n}),
        ("landscape", {"n_train": n, "n_test": n, "points_1d": 5, "points_2d": 3}),
    ):
        for models in raw[section].values():
            for cfg in models.values():
                cfg |= subset
    return parse_params(raw)


def write_params(path: Path, params: Params) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(params.model_dump(), sort_keys=False))


def write_toy_mnist2(path: Path, n: int = TINY_N) -> Path:
    """A prepared-format MNIST2 stand-in with n images per split (uint8 NCHW, labels 0/1):
    class k lights rows 2k..2k+2 over noise, as the tests' toy digits do."""
    rng = np.random.default_rng(0)
    arrays = {}
    for split in ("train", "test"):
        y = np.arange(n) % 2
        x = rng.integers(0, 60, (n, 1, 28, 28), dtype=np.uint8)
        for k in (0, 1):
            x[y == k, :, 2 * k : 2 * k + 3] = 230
        arrays[f"x_{split}"], arrays[f"y_{split}"] = x, y
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return path


def mnist2(tiny: bool) -> Dataset:
    """Prepared MNIST2 (`make reproduce` or `dvc repro prepare` makes it), or toy digits."""
    if not tiny:
        return load_prepared(ROOT / "data" / "prepared" / "mnist2.npz")
    with tempfile.TemporaryDirectory() as tmp:
        return load_prepared(write_toy_mnist2(Path(tmp) / "mnist2.npz"))


def train_and_evaluate(params: Params, data: Dataset, run_id: str, directory: Path) -> dict:
    """What the train and evaluate stages do for one run, in this process; the metrics."""
    run = params.run(run_id)
    cfg, attack = params.train_for(run), params.attack_for(run)
    models = directory / run_id
    train_seeds(
        run, data, cfg, attack, params.noise, params.seeds, models, directory / f"{run_id}.csv"
    )
    return evaluate_seeds(
        run,
        data,
        params.seeds,
        models,
        attack.eval,
        params.noise,
        params.evaluate_for(run),
        cfg.hardware.device,
    )


def trained_model(params: Params, run_id: str, data: Dataset, directory: Path) -> nn.Module:
    """The first seed of a run, trained here as its train stage would (CPU training is
    deterministic: the same weights as in models/)."""
    run = params.run(run_id)
    models = directory / run_id
    cfg, attack, seed = params.train_for(run), params.attack_for(run), params.seeds[0]
    train_seeds(run, data, cfg, attack, params.noise, [seed], models, directory / f"{run_id}.csv")
    return load_model(checkpoint_path(models, seed))[0]


def stage_argv(stage: str, item: str | Run | None = None) -> list[str]:
    """`stage`'s script and arguments from its cmd in DVC, for one foreach item (a
    dataset name or a Run), as `python script args` without the warm launcher
    (advland.pipeline.warm). It runs from any folder: its paths stay relative, the script is
    this repository's."""
    own = ROOT / "stages" / stage / "dvc.yaml"  # per-run stages have their own file
    pipeline = own if own.is_file() else ROOT / "dvc.yaml"
    spec = yaml.safe_load(pipeline.read_text())["stages"][stage]
    cmd = spec["do"]["cmd"] if "do" in spec else spec["cmd"]
    if isinstance(item, Run):
        values = {"key": item.run_id} | {f"item.{k}": str(v) for k, v in item.model_dump().items()}
    else:
        values = {"item": item}
    words = shlex.split(re.sub(r"\$\{([\w.]+)\}", lambda m: values[m[1]], cmd))
    script = next(i for i, word in enumerate(words) if word.endswith(".py"))
    return [sys.executable, str(ROOT / words[script]), *words[script + 1 :]]


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


def last_line_of(*args: str, env: dict[str, str] | None = None) -> str:
    """Run `python *args` in a fresh process; the last line it prints."""
    out = subprocess.run(
        [sys.executable, *args], env=env, check=True, capture_output=True, text=True
    )
    return out.stdout.strip().splitlines()[-1]


def save(name: str, result: dict, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **result}, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"wrote {path}")
