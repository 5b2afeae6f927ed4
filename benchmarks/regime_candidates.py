"""Candidate models for the capacity × data regime map (issue 25): how close each one's
adversarial training runs to this machine's peak, before one is chosen.

    python benchmarks/regime_candidates.py              # batch 128, the candidates below
    python benchmarks/regime_candidates.py --threads 1  # the same on one torch thread
    python benchmarks/regime_candidates.py --tiny       # batch 16, toy widths, 1 repeat

The peak is the median GFLOP/s of a 2048x2048 @ 2048x2048 float32 matmul, timed in the
same rounds as the candidates (median_times: a slow spell of the machine weighs on both)
and on the same torch threads. A candidate's step is one PGD-5 training step on a batch
of 128 random 1x28x28 images with 10 classes, Linf eps 8/255, step 2.5 eps / 5 (the
params' Fashion-MNIST attack): advland.train.fit for one epoch on one batch, so the
library's own loop runs it (the attack through advland.core.attacks.pgd, then a forward,
a backward and an SGD step with the params' CNN optimizer). Its FLOPs are counted by
torch.utils.flop_counter.FlopCounterMode on that same call: matmuls and convolutions,
not elementwise ops (ReLU, BatchNorm, the loss, the SGD update). Seconds per epoch are
fit's epochs on 500, 1000 and 4000 images.

Candidates: the CNN of the default pipeline (build_cnn, widths 8 and 16, with BatchNorm)
and MLPs 784-W-W-10 with ReLU and no BatchNorm (not in the library yet). `choice` lists
those that reach the issue's bar, 30% of the peak.
"""

from __future__ import annotations

import math

import torch
from common import arguments, median_times, out_dir, repo_params, save
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from advland.core.config import Run
from advland.core.models import build_cnn
from advland.core.perturb import make_perturb
from advland.train import fit

SHAPE, CLASSES = (1, 28, 28), 10
RUN = Run(dataset="fashion_mnist", model="cnn", norm="linf", noise="adv", eps=8 / 255)
BAR = 0.30  # the chosen model's throughput, as a fraction of the matmul peak (issue 25)
CANDIDATES = [("cnn", 8), ("cnn", 16), ("mlp", 256), ("mlp", 512), ("mlp", 1024), ("mlp", 2048)]
EPOCH_SIZES = (500, 1000, 4000)
MATMUL_N = 2048


def mlp(width: int) -> nn.Module:
    """784-W-W-10 with ReLU, no BatchNorm."""
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(math.prod(SHAPE), width),
        nn.ReLU(),
        nn.Linear(width, width),
        nn.ReLU(),
        nn.Linear(width, CLASSES),
    )


def build(kind: str, width: int) -> nn.Module:
    torch.manual_seed(0)
    return build_cnn(SHAPE, CLASSES, width) if kind == "cnn" else mlp(width)


class GlobalOnly:
    """Stands in for FlopCounterMode's per-module tracker, whose hooks make
    torch.autograd.grad on a leaf input (every PGD step) fail: "A leaf node was passed to
    _will_engine_execute_node" (pytorch/pytorch#131753, open). The total is counted as
    before, under "Global"; only the per-module breakdown, unused here, is lost."""

    parents = frozenset({"Global"})

    def __enter__(self) -> GlobalOnly:
        return self

    def __exit__(self, *exc) -> None:
        pass


def flops(fn) -> int:
    """The FLOPs FlopCounterMode counts in one call of fn."""
    counter = FlopCounterMode(display=False)
    counter.mod_tracker = GlobalOnly()
    with counter:
        fn()
    return counter.get_total_flops()


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's own)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    params = repo_params()
    attack = params.attack_for(RUN).train
    cfg = params.train_for(RUN).model_copy(update={"epochs": 1})
    batch, repeats, n_matmul = cfg.batch_size, 5, MATMUL_N
    candidates, sizes = CANDIDATES, EPOCH_SIZES
    if args.tiny:
        batch, repeats, n_matmul = 16, 1, 512
        candidates, sizes = [("cnn", 2), ("mlp", 32), ("mlp", 64)], (16, 32, 64)
    cfg = cfg.model_copy(update={"batch_size": batch})
    perturb = make_perturb(
        "adv", RUN.norm, RUN.eps, attack, params.noise.distribution, torch.Generator()
    )
    torch.manual_seed(0)
    x, y = torch.rand(max(sizes), *SHAPE), torch.randint(0, CLASSES, (max(sizes),))
    a, b, c = (torch.randn(n_matmul, n_matmul) for _ in range(3))
    models = {f"{kind}-w{width}": (kind, width, build(kind, width)) for kind, width in candidates}

    def train(model: nn.Module, n: int):
        return lambda: fit(model, x[:n], y[:n], cfg, perturb, (torch.Generator().manual_seed(0),))

    steps = {name: train(model, batch) for name, (_, _, model) in models.items()}
    matmul = lambda: torch.mm(a, b, out=c)  # noqa: E731
    t = median_times({"matmul": matmul, **steps}, repeats)
    matmul_flops = flops(matmul)
    assert matmul_flops == 2 * n_matmul**3
    peak = matmul_flops / t["matmul"] / 1e9
    epochs = median_times(
        {f"{name} {n}": train(model, n) for name, (_, _, model) in models.items() for n in sizes},
        repeats=min(repeats, 3),
        warmup=0,  # every model is warm from its steps
    )
    rows = []
    for name, (kind, width, model) in models.items():
        step_flops = flops(steps[name])
        with torch.no_grad():
            forward_flops = flops(lambda model=model: model(x[:batch]))
        gflops = step_flops / t[name] / 1e9
        rows.append(
            {
                "name": name,
                "model": kind,
                "width": width,
                "architecture": (
                    f"784-{width}-{width}-10 MLP, ReLU, no BatchNorm"
                    if kind == "mlp"
                    else f"build_cnn width {width} (4 conv + BatchNorm)"
                ),
                "parameters": sum(p.numel() for p in model.parameters()),
                "step_ms": 1000 * t[name],
                "step_flops": step_flops,
                "forward_flops": forward_flops,
                "step_over_forward_flops": step_flops / forward_flops,
                "gflops": gflops,
                "fraction_of_peak": gflops / peak,
                "epoch_s": {str(n): epochs[f"{name} {n}"] for n in sizes},
            }
        )
    reach = [r["name"] for r in rows if r["fraction_of_peak"] >= BAR]
    best = max(rows, key=lambda r: r["fraction_of_peak"])
    save(
        "regime_candidates",
        {
            "setting": f"batch {batch} of 1x{SHAPE[1]}x{SHAPE[2]}, {CLASSES} classes, "
            f"PGD-{attack.steps} Linf eps 8/255 step {attack.step(RUN.eps) * 255:.1f}/255 "
            f"training, {cfg.optimizer.name} momentum {cfg.optimizer.momentum}, "
            f"{torch.get_num_threads()} torch threads",
            "threads": torch.get_num_threads(),
            "repeats": repeats,
            "peak": {
                "what": f"float32 matmul {n_matmul}x{n_matmul} @ {n_matmul}x{n_matmul}",
                "ms": 1000 * t["matmul"],
                "flops": matmul_flops,
                "gflops": peak,
            },
            "rows": rows,
            "choice": {
                "bar_fraction_of_peak": BAR,
                "reach_bar": reach,
                "best": best["name"],
                "best_fraction_of_peak": best["fraction_of_peak"],
                "summary": (
                    f"{', '.join(reach)} reach{'es' if len(reach) == 1 else ''} "
                    f"{BAR:.0%} of the peak"
                    if reach
                    else f"no candidate reaches {BAR:.0%} of the peak"
                )
                + f"; the highest is {best['name']} at {best['fraction_of_peak']:.0%}",
            },
        },
        out_dir(args),
    )


if __name__ == "__main__":
    main()
