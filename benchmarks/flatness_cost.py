"""The flatness suite's cost per model: seconds per measure and target, the whole suite
per seed, and the adaptive Hessian's HVPs beside PyHessian's for the plain top eigenvalue.

    python benchmarks/flatness_cost.py          # needs models/ (dvc repro) and data/prepared
    python benchmarks/flatness_cost.py --tiny   # toy digits, a 1-epoch LR, tiny budgets

Each measure runs with its settings in params.yaml (flatness.<dataset>.<model>) on its
run's own target: the median of 3 timed calls after one untimed; the whole suite (every
measure on every target, and the robust gap) once. The LR is the sharpest Linf run, the
CNN the Fashion-MNIST one at 8/255.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from common import (
    ROOT,
    arguments,
    median_time,
    mnist2,
    out_dir,
    repo_params,
    save,
    tiny_params,
    trained_model,
)

from advland.core.models import checkpoint_path, load_model
from advland.core.rng import rng
from advland.data import load_prepared
from advland.measure.flatness import (
    MEASURES,
    TARGETS,
    Context,
    attacked,
    flatness_config,
    flatness_run,
)
from advland.measure.hessian import pyhessian_top
from advland.measure.sharpness import make_loss

LR_RUN, CNN_RUN = "mnist2-lr-linf-adv-76p5_255", "fashion_mnist-cnn-linf-adv-8_255"


def cost(params, run_id: str, model: torch.nn.Module, data, repeats: int) -> dict:
    run = params.run(run_id)
    cfg, attack = flatness_config(params, run), params.attack_for(run)
    seen = data.subset(cfg.n_train, cfg.n_test)
    net = model.eval().to(getattr(torch, cfg.dtype))
    x, y = seen.x_train.to(next(net.parameters()).dtype), seen.y_train
    target = TARGETS["own"](run, attack, params.noise.distribution, cfg, rng(0, "flatness"))
    x_t = attacked(net, x, y, target.perturb).detach()
    context = Context(net, x, x_t, y, target, make_loss(cfg.logit_norm), cfg, 0)
    seconds = {
        name: median_time(lambda m=measure: m(context), repeats)
        for name, measure in MEASURES.items()
        if getattr(cfg, name) is not None
    }
    hvps = {}
    if cfg.adaptive_hessian is not None:
        hvps["adaptive_lanczos_and_hutchinson"] = (
            cfg.adaptive_hessian.lanczos_iters + cfg.adaptive_hessian.trace_samples
        )
        hvps["pyhessian_top1_plain"] = pyhessian_top(net, x_t, y, 1)["hvps"]
    suite = median_time(
        lambda: flatness_run(model, run, seen, attack, params.noise.distribution, cfg, 0), 1, 0
    )
    return {
        "run": run_id,
        "parameters": sum(p.numel() for p in model.parameters()),
        "n_train": len(x),
        "targets": cfg.targets,
        "measure_s": seconds,
        "suite_s": suite,
        "hvps": hvps,
    }


def main() -> None:
    args = arguments(__doc__).parse_args()
    params, repeats = repo_params(), 3
    rows = []
    if args.tiny:
        params, repeats = tiny_params(params, [LR_RUN], 64), 1
        data = mnist2(True)
        with tempfile.TemporaryDirectory() as tmp:
            rows.append(
                cost(params, LR_RUN, trained_model(params, LR_RUN, data, Path(tmp)), data, repeats)
            )
    else:
        for run_id in (LR_RUN, CNN_RUN):
            run = params.run(run_id)
            data = load_prepared(ROOT / "data" / "prepared" / f"{run.dataset}.npz")
            model, _ = load_model(checkpoint_path(ROOT / "models" / run_id, params.seeds[0]))
            rows.append(cost(params, run_id, model, data, repeats))
    save("flatness_cost", {"rows": rows}, out_dir(args))


if __name__ == "__main__":
    main()
