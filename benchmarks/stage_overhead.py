"""The fixed cost of a stage: what every DVC stage process pays besides its own work.

    python benchmarks/stage_overhead.py
    python benchmarks/stage_overhead.py --tiny     # 1 repeat of each, 1 DVC stage

(a) Wall time of `python stages/evaluate.py ...` (its cmd in dvc.yaml) on a run whose
    work is nearly nil: a 1-epoch LR trained here with train_seeds on 64 toy digits,
    evaluated on 8 train and 8 test images, in a scratch workspace; median of 5 fresh
    processes, beside the seconds the stage reports for its own main() (after its
    imports). The same through `python -m advland.pipeline.warm`, as dvc.yaml runs it, with a
    warm server started here beforehand (and ended after).
(b) `python -X importtime` of that stage: total import time, the modules with the
    largest cumulative time, import time per top-level package (self times summed:
    they add up to the total); and `import torch` alone, median of 5 processes.
(c) The first `torch.optim.SGD(...).step()` in a fresh process (it imports
    torch._dynamo) against the second, median of 5 processes.
(d) A no-op `dvc repro` (all stages up to date) in a scratch git + DVC repo, with one
    stage and with as many as the default pipeline has (one `echo` per stage).

Each is measured twice: in this environment as it is, and with Python's bytecode
cache on (PYTHONPYCACHEPREFIX, filled by one untimed run): a venv installed without
.pyc files, under PYTHONDONTWRITEBYTECODE=1, compiles every module it imports in
every process.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import torch
import yaml
from common import (
    ROOT,
    arguments,
    last_line_of,
    out_dir,
    repo_params,
    save,
    stage_argv,
    tiny_params,
    write_params,
    write_toy_mnist2,
)

from advland.data import load_prepared
from advland.train import train_seeds

RUN = "mnist2-lr-l2-adv-1"
TORCH_IMPORT = "import time; t = time.perf_counter(); import torch; print(time.perf_counter() - t)"
SGD_STEPS = """
import json, sys, time, torch
p = torch.nn.Parameter(torch.zeros(785))
p.grad = torch.ones(785)
before = "torch._dynamo" in sys.modules
times = []
for _ in range(2):
    t = time.perf_counter()
    torch.optim.SGD([p], lr=0.1, momentum=0.9).step()
    times.append(time.perf_counter() - t)
after = "torch._dynamo" in sys.modules
print(json.dumps({"first_s": times[0], "second_s": times[1], "imports_dynamo": after > before}))
"""
WARM_SOCKET = "from advland.pipeline.warm import socket_path; print(socket_path())"


def evaluate_workspace(folder: Path) -> list[str]:
    """A scratch workspace for one evaluate stage with nearly nothing to do; its argv."""
    params = tiny_params(repo_params(), [RUN], n=8)
    run = params.run(RUN)
    write_params(folder / "params.yaml", params)
    argv = stage_argv("evaluate", run)
    named = dict(zip(argv[2::2], argv[3::2], strict=True))  # script --flag value ...
    data_path, models = folder / named["--data"], folder / named["--models"]
    data = load_prepared(write_toy_mnist2(data_path, 64))
    cfg, attack, log = params.train_for(run), params.attack_for(run), folder / "log.csv"
    train_seeds(run, data, cfg, attack, params.noise, params.seeds, models, log)
    return argv


def wall_time(argv: list[str], cwd: Path, env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, cwd=cwd, env=env, check=True, capture_output=True)
    return time.perf_counter() - t0


@contextlib.contextmanager
def warm_server(env: dict[str, str]) -> Iterator[None]:
    """An advland.pipeline.warm server for clients with `env`, started here, ended on exit."""
    path = Path(last_line_of("-c", WARM_SOCKET, env=env))
    serve = [sys.executable, "-m", "advland.pipeline.warm", "--serve", str(path)]
    server = subprocess.Popen(serve, env=env, stdout=subprocess.DEVNULL)
    try:
        while not path.exists():  # the socket appears once the server listens
            if server.poll() is not None:
                raise RuntimeError(f"the advland.pipeline.warm server exited ({server.returncode})")
            time.sleep(0.1)
        yield
    finally:
        server.terminate()
        server.wait()


def import_times(stderr: str) -> list[tuple[str, float, float]]:
    """(module, self s, cumulative s) for each line of `python -X importtime`'s report."""
    rows = []
    for line in stderr.splitlines():
        if line.startswith("import time:") and "self [us]" not in line:
            self_us, cum_us, name = line[len("import time:") :].split("|")
            rows.append((name.strip(), int(self_us) / 1e6, int(cum_us) / 1e6))
    return rows


def stage_imports(argv: list[str], cwd: Path, env: dict[str, str], top: int = 10) -> dict:
    importtime = [argv[0], "-X", "importtime", *argv[1:]]
    done = subprocess.run(importtime, cwd=cwd, env=env, check=True, capture_output=True, text=True)
    rows = import_times(done.stderr)
    packages = defaultdict(float)
    for name, self_s, _ in rows:
        packages[name.split(".")[0]] += self_s
    return {
        "total_s": sum(self_s for _, self_s, _ in rows),
        "modules": len(rows),
        "top_cumulative_s": {name: cum for name, _, cum in sorted(rows, key=lambda r: -r[2])[:top]},
        "packages_s": dict(sorted(packages.items(), key=lambda kv: -kv[1])[:top]),
    }


def dvc_noop(stages: int, repeats: int, env: dict[str, str]) -> float:
    """Median seconds of `dvc repro` with nothing to do, `stages` stages in the repo."""
    env = {**env, "DVC_NO_ANALYTICS": "1"}
    dvc = [sys.executable, "-m", "dvc"]
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp)
        subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
        subprocess.run([*dvc, "init", "-q"], cwd=repo, env=env, check=True)
        pipeline = {
            "stages": {
                "echo": {
                    "foreach": list(range(stages)),
                    "do": {"cmd": "echo ${item} > ${item}.txt", "outs": ["${item}.txt"]},
                }
            }
        }
        (repo / "dvc.yaml").write_text(yaml.safe_dump(pipeline))
        subprocess.run([*dvc, "repro", "-q"], cwd=repo, env=env, check=True, capture_output=True)
        return statistics.median(wall_time([*dvc, "repro"], repo, env) for _ in range(repeats))


def measure(
    argv: list[str], work: Path, env: dict[str, str], repeats: int, counts: list[int]
) -> dict:
    """(a) to (d) in one environment."""
    cold, main = [], []
    for _ in range(repeats):
        cold.append(wall_time(argv, work, env))
        metrics = dict(zip(argv[2::2], argv[3::2], strict=True))["--metrics"]
        main.append(json.loads((work / metrics).read_text())["seconds"])
    warm_argv = [sys.executable, "-m", "advland.pipeline.warm", *argv[1:]]
    with warm_server(env):
        wall_time(warm_argv, work, env)  # untimed: the server's first child
        warm = [wall_time(warm_argv, work, env) for _ in range(repeats)]
    torch_s = [float(last_line_of("-c", TORCH_IMPORT, env=env)) for _ in range(repeats)]
    sgd = [json.loads(last_line_of("-c", SGD_STEPS, env=env)) for _ in range(repeats)]
    return {
        "stage_wall_s": statistics.median(cold),
        "stage_main_s": statistics.median(main),
        "stage_warm_wall_s": statistics.median(warm),
        "imports": stage_imports(argv, work, env),
        "torch_import_s": statistics.median(torch_s),
        "first_sgd_step": {
            "first_s": statistics.median(s["first_s"] for s in sgd),
            "second_s": statistics.median(s["second_s"] for s in sgd),
            "imports_dynamo": all(s["imports_dynamo"] for s in sgd),
        },
        "dvc_noop_repro_s": {str(n): dvc_noop(n, min(repeats, 3), env) for n in counts},
    }


def main() -> None:
    args = arguments(__doc__).parse_args()
    repeats = 1 if args.tiny else 5
    params = repo_params()
    # dvc.yaml's stages: prepare per dataset; train, evaluate, hessian, landscape per run; report
    pipeline_stages = len(params.prepare.datasets) + 4 * len(params.runs) + 1
    counts = [1] if args.tiny else [1, pipeline_stages]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "work"
        argv = evaluate_workspace(work)
        as_is = {**os.environ, "ADVLAND_WARM_DIR": str(Path(tmp) / "warm")}  # our own servers
        cached = {"PYTHONPYCACHEPREFIX": str(Path(tmp) / "pycache"), **as_is}  # a set one wins
        cached.pop("PYTHONDONTWRITEBYTECODE", None)
        wall_time(argv, work, cached)  # fill the bytecode cache
        last_line_of("-c", SGD_STEPS, env=cached)
        torch_pyc = Path(importlib.util.cache_from_source(torch.__file__))
        result = {
            "command": " ".join(["python", str(Path(argv[1]).relative_to(ROOT)), *argv[2:]]),
            "repeats": repeats,
            "dont_write_bytecode": bool(sys.flags.dont_write_bytecode),
            "torch_pyc_present": torch_pyc.is_file(),
            "as_is": measure(argv, work, as_is, repeats, counts),
            "bytecode_cache": measure(argv, work, cached, repeats, counts),
        }
    save("stage_overhead", result, out_dir(args))


if __name__ == "__main__":
    main()
