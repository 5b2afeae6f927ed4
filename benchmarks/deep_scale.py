"""The CPU scale of the deep-net family: what one batch and one Hessian-vector product cost.

    python benchmarks/deep_scale.py          # batch 128 of 1x28x28, the params' CNN settings
    python benchmarks/deep_scale.py --tiny   # batch 16, narrow nets, 32 images for the HVP

Per model: the median time of a forward plus an input-gradient backward (one PGD step)
and of one PGD-k training step (k PGD steps, then a forward and a weight backward), in
train mode. Then the HVP of the params' CNN on its Hessian subset, forward over reverse
against reverse over reverse, in float64 and float32. Random images stand in for the
data: the times do not depend on pixel values.
"""

from __future__ import annotations

import torch
from common import arguments, median_times, out_dir, repo_params, save
from torch.func import grad, jvp

from advland.core.config import Run
from advland.core.models import build_model, per_example_loss
from advland.core.perturb import make_perturb
from advland.measure.hessian import flat_objective, make_hvp

RUN = Run(dataset="fashion_mnist", model="cnn", norm="linf", noise="adv", eps=25.5 / 255)
CANDIDATES = [("cnn", 8), ("cnn", 16), ("resnet18", 8)]


def batch_times(model_name: str, width: int, batch: int, attack, repeats: int) -> dict:
    torch.manual_seed(0)
    model = build_model(model_name, (1, 28, 28), 10, width).train()
    x, y = torch.rand(batch, 1, 28, 28), torch.randint(0, 10, (batch,))
    perturb = make_perturb("adv", "linf", RUN.eps, attack, "uniform", torch.Generator())
    opt = torch.optim.SGD(model.parameters(), lr=0.0)

    def input_gradient():
        xx = x.clone().requires_grad_()
        torch.autograd.grad(per_example_loss(model(xx), y).mean(), xx)

    def train_step():
        opt.zero_grad()
        per_example_loss(model(perturb(model, x, y)), y).mean().backward()
        opt.step()

    t = median_times({"input_gradient": input_gradient, "train_step": train_step}, repeats)
    return {
        "model": model_name,
        "width": width,
        "parameters": sum(p.numel() for p in model.parameters()),
        "forward_input_grad_ms": 1000 * t["input_gradient"],
        "pgd_train_step_ms": 1000 * t["train_step"],
    }


def hvp_pair(model, x, y) -> dict:
    """The two HVP methods on one model and batch, as callables on one vector."""
    loss, theta = flat_objective(model, x, y)
    v = torch.randn_like(theta)
    g, h = grad(loss), make_hvp(loss, theta)
    return {
        "forward_over_reverse": lambda: jvp(g, (theta,), (v,)),
        "reverse_over_reverse": lambda: h(v),
    }


def hvp_times(width: int, n: int, repeats: int) -> list[dict]:
    rows = []
    for dtype in (torch.float64, torch.float32):
        torch.manual_seed(0)
        model = build_model("cnn", (1, 28, 28), 10, width).eval().to(dtype)
        x, y = torch.rand(n, 1, 28, 28, dtype=dtype), torch.randint(0, 10, (n,))
        t = median_times(hvp_pair(model, x, y), repeats)
        name = str(dtype).removeprefix("torch.")
        rows += [{"dtype": name, "method": k, "s": s} for k, s in t.items()]
    return rows


def main() -> None:
    args = arguments(__doc__).parse_args()
    params = repo_params()
    cfg, attack = params.train_for(RUN), params.attack_for(RUN).train
    n_hvp = params.hessian_for(RUN).n_samples
    batch, repeats, candidates = cfg.batch_size, 5, CANDIDATES
    if args.tiny:
        batch, repeats, n_hvp, candidates = 16, 1, 32, [("cnn", 2), ("resnet18", 2)]
    rows = [batch_times(m, w, batch, attack, repeats) for m, w in candidates]
    width = 2 if args.tiny else cfg.model.width
    hvps = hvp_times(width, n_hvp, repeats)
    default = next((r for r in rows if (r["model"], r["width"]) == ("cnn", width)), None)
    batches = -(-(cfg.data.n_train or 60000) // batch)
    save(
        "deep_scale",
        {
            "setting": f"batch {batch} of 1x28x28, PGD-{attack.steps} training, "
            f"HVP on {n_hvp} images",
            "rows": rows,
            "hvp": hvps,
            "default_cnn_training_s_per_adv_run": (
                default["pgd_train_step_ms"] / 1000 * batches * cfg.epochs
                if default and not args.tiny
                else None
            ),
        },
        out_dir(args),
    )


if __name__ == "__main__":
    main()
