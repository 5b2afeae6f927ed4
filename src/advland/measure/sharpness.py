"""Scale-invariant sharpness of a trained model at fixed inputs: the adaptive Hessian,
average sharpness and worst-case m-sharpness (Andriushchenko et al. 2023, "A modern look
at the relationship between sharpness and generalization"; Kwon et al. 2021, ASAM).

Every measure is of L(w) = loss_fn(f_w(x), y), a mean of per-example losses on fixed
inputs x, with the model in eval mode (BatchNorm's running statistics fixed) and every
tensor of model.parameters() perturbed: weights, biases and BatchNorm's affine. Each
leaves the model as it found it: its mode, and its weights copied back bit for bit.

A weight perturbation is delta = T u, T = diag(c) with one scale c per parameter (SCALES):
- plain:    c = 1;
- adaptive: c = |w| + eta, ASAM's T_w, here for every parameter (ASAM leaves biases
            unscaled). At eta = 0 the measures do not change under a rescaling that
            leaves the function unchanged (w_l -> a w_l, b_l -> a b_l, w_{l+1} -> w_{l+1} / a
            around a ReLU; a weight before BatchNorm with its running statistics): with
            w' = S w, H' = S^-1 H S^-1 and T' = S T, so T' H' T' = T H T.

Measures:
- adaptive_hessian: lambda1 and trace of T H T, H = d^2 L / dw^2 (Lanczos, Hutchinson);
- average_sharpness: E L(w + delta) - L(w), delta = rho T z, z ~ N(0, I), estimated
  with antithetic pairs +-delta (the linear term cancels); ~ (rho^2 / 2) tr(T H T);
- worst_sharpness: mean over batches B of m consecutive examples of
  max_{||u||_p <= rho} L_B(w + T u) - L_B(w); in L2 at a minimum ~ (rho^2 / 2) lambda1(T H_B T).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from advland.core.models import per_example_loss
from advland.core.norms import NORMS
from advland.core.registry import Registry
from advland.measure.hessian import CountingHVP, hutchinson_trace, lanczos_ritz, make_hvp

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
LOGIT_NORM_MIN = 1e-10  # as Andriushchenko et al.: ||z|| is clamped below by this


# -----------------------------------------------------------------------------
# the loss, the scales and the model's state


def normalize_logits(logits: torch.Tensor) -> torch.Tensor:
    """z -> (z - mean_k z_k) / ||z - mean_k z_k||_2 per example (Andriushchenko et al.'s
    logit normalization; centering does not change the softmax, it fixes the norm).

    Needs K >= 3 classes: with K = 2 (or a binary model's one logit f, the two-class
    vector [0, f]) the normalized vector is +-[-1, 1] / sqrt(2), so the loss is a step
    function of sign(f): zero gradient and Hessian almost everywhere, raised as an error.
    """
    if logits.ndim == 1 or logits.shape[1] < 3:
        raise ValueError(
            "logit normalization needs >= 3 classes: for a binary model the normalized "
            "logits are +-[-1, 1]/sqrt(2), a loss that depends on sign(f) only (flat a.e.)"
        )
    z = logits - logits.mean(1, keepdim=True)
    return z / z.norm(dim=1, keepdim=True).clamp_min(LOGIT_NORM_MIN)


def make_loss(logit_norm: bool) -> Loss:
    """(logits, y) -> mean per_example_loss, of normalize_logits(logits) if logit_norm."""
    if not logit_norm:
        return lambda logits, y: per_example_loss(logits, y).mean()
    return lambda logits, y: F.cross_entropy(normalize_logits(logits), y)


SCALES: Registry[Callable[[torch.Tensor, float], torch.Tensor]] = Registry(
    "sharpness scale",
    {
        "plain": lambda w, eta: torch.ones_like(w),
        "adaptive": lambda w, eta: w.abs() + eta,
    },
)


def scales(model: nn.Module, kind: str, eta: float) -> list[torch.Tensor]:
    """T per parameter tensor: ones (plain) or |w| + eta (adaptive)."""
    return [SCALES[kind](p.detach(), eta) for p in model.parameters()]


@contextmanager
def evaluating(model: nn.Module) -> Iterator[list[torch.Tensor]]:
    """Eval mode and a copy of the weights (yielded); on exit the weights are copied back
    and the mode restored."""
    was_training = model.training
    saved = [p.detach().clone() for p in model.parameters()]
    model.eval()
    try:
        yield saved
    finally:
        set_weights(model, saved)
        model.train(was_training)


@torch.no_grad()
def set_weights(model: nn.Module, weights: list[torch.Tensor]) -> None:
    for p, w in zip(model.parameters(), weights, strict=True):
        p.copy_(w)


@torch.no_grad()
def full_loss(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: Loss, batch_size: int | None = None
) -> float:
    """loss_fn over all of x, in batches of batch_size, each weighted by its size."""
    n, bs = len(x), batch_size or len(x)
    total = sum(
        loss_fn(model(x[i : i + bs]), y[i : i + bs]).item() * len(x[i : i + bs])
        for i in range(0, n, bs)
    )
    return total / n


def flatten(tensors: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.flatten() for t in tensors])


def unflatten(flat: torch.Tensor, like: list[torch.Tensor]) -> list[torch.Tensor]:
    """A flat vector split into tensors shaped as `like`'s."""
    parts = flat.split([w.numel() for w in like])
    return [v.view_as(w) for v, w in zip(parts, like, strict=True)]


def gaussian_like(tensors: list[torch.Tensor], generator: torch.Generator) -> list[torch.Tensor]:
    """One N(0, I) draw per tensor, in order, from `generator` (CPU), on each tensor's device."""
    return [torch.randn(t.shape, generator=generator, dtype=t.dtype).to(t.device) for t in tensors]


# -----------------------------------------------------------------------------
# adaptive Hessian


def flat_loss(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: Loss, dtype=torch.float64
):
    """theta -> loss_fn(f_theta(x), y) with theta the parameters flattened, in `dtype`
    (hessian.flat_objective for any loss; float buffers cast too, the model untouched)."""
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    sizes = [s.numel() for s in shapes]
    buffers = {n: b.to(dtype) if b.is_floating_point() else b for n, b in model.named_buffers()}
    x = x.to(dtype)

    def loss(theta: torch.Tensor) -> torch.Tensor:
        params = {n: t.view(s) for n, t, s in zip(names, theta.split(sizes), shapes, strict=True)}
        return loss_fn(functional_call(model, {**params, **buffers}, (x,)), y)

    theta = torch.cat([p.detach().to(dtype).flatten() for p in model.parameters()])
    return loss, theta


def adaptive_hessian(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: Loss,
    eta: float,
    iters: int,
    trace_samples: int,
    seed: int = 0,
    dtype=torch.float64,
    kind: str = "adaptive",
) -> dict[str, float]:
    """lambda1 (Lanczos, `iters` steps, with its residual) and trace (Hutchinson,
    `trace_samples` Rademacher vectors) of T H T, T = diag(|w| + eta) (kind "plain": T = I),
    from the HVP v -> T (H (T v)) at fixed x. HVPs in `dtype` on the model's device, the
    Krylov basis in float64 on the CPU; hvps counts both solvers' HVPs."""
    with evaluating(model):
        loss, theta = flat_loss(model, x, y, loss_fn, dtype)
        t = flatten(scales(model, kind, eta)).to(dtype)
        hvp = make_hvp(loss, theta)
        scaled = CountingHVP(lambda v: (t * hvp(t * v.to(t))).to(v.device))  # v on the CPU
        ritz = lanczos_ritz(scaled, theta.numel(), 1, iters, seed=seed)
        trace = hutchinson_trace(scaled, theta.numel(), trace_samples, seed=seed)
    return {
        "lambda1": ritz.values[0].item(),
        "lambda1_residual": ritz.residuals[0].item(),
        "trace": trace,
        "hvps": scaled.calls,
    }


# -----------------------------------------------------------------------------
# average sharpness


def average_sharpness(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: Loss,
    rho: float,
    kind: str,
    eta: float,
    draws: int,
    generator: torch.Generator,
    batch_size: int | None = None,
) -> float:
    """mean_j [L(w + delta_j) + L(w - delta_j)] / 2 - L(w), delta_j = rho c z_j,
    z_j ~ N(0, I) (gaussian_like over the parameters), c = scales(kind, eta): 2 draws
    forward passes over x."""
    with evaluating(model) as w0:
        c = scales(model, kind, eta)
        base = full_loss(model, x, y, loss_fn, batch_size)
        total = 0.0
        for _ in range(draws):
            delta = [rho * ci * zi for ci, zi in zip(c, gaussian_like(w0, generator), strict=True)]
            for sign in (1, -1):
                set_weights(model, [w + sign * d for w, d in zip(w0, delta, strict=True)])
                total += full_loss(model, x, y, loss_fn, batch_size)
    return total / (2 * draws) - base


# -----------------------------------------------------------------------------
# worst-case m-sharpness


class WorstCase(NamedTuple):
    """The loss increase max_k L(w + T u_k) - L(w) over the iterates (>= 0: u = 0 counts)
    and its delta = T u per parameter (zeros when no iterate beat u = 0)."""

    increase: float
    delta: list[torch.Tensor]


def worst_step(rho: float, k: int, steps: int) -> float:
    """Step k of `steps`: 2 rho (Andriushchenko et al.'s first APGD step), halved after each
    quarter of the budget (2, 1, 0.5, 0.25 rho): a schedule that depends on no loss value,
    so that equal losses give equal iterates (the invariance holds step by step)."""
    return 2 * rho * 0.5 ** min(3, 4 * k // max(steps, 1))


def worst_case(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: Loss,
    rho: float,
    p: str,
    scale: list[torch.Tensor],
    steps: int,
    generator: torch.Generator,
) -> WorstCase:
    """max_{||u||_p <= rho} L(w + T u) - L(w) on one batch (x, y), by projected steepest
    ascent in u (p = l2: one ball over all parameters, steps along T g / ||T g||; linf: a
    box, steps along sign(T g)), from u_0 uniform in the ball (NORMS[p].sample_ball),
    with step sizes worst_step; keeps the best iterate. steps + 1 forward, steps backward."""
    geometry = NORMS[p]
    with evaluating(model) as w0:
        params = list(model.parameters())
        t = flatten(scale)[None]  # (1, D): u is one "example" of the NORMS geometry
        base = full_loss(model, x, y, loss_fn)
        best, best_u = base, torch.zeros_like(t)
        u = geometry.sample_ball(torch.zeros(t.shape, dtype=t.dtype), rho, generator).to(t.device)
        for k in range(steps + 1):
            set_weights(model, [w + d for w, d in zip(w0, unflatten((t * u)[0], w0), strict=True)])
            if k == steps:
                value = full_loss(model, x, y, loss_fn)
            else:
                with torch.enable_grad():
                    loss = loss_fn(model(x), y)
                    grads = torch.autograd.grad(loss, params)
                value = loss.item()
            if value > best:
                best, best_u = value, u.clone()
            if k == steps:
                break
            direction = geometry.steepest_(t * flatten(grads)[None])
            u = geometry.project_(u + worst_step(rho, k, steps) * direction, rho)
        delta = unflatten((t * best_u)[0], w0)
    return WorstCase(best - base, delta)


def worst_sharpness(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: Loss,
    rho: float,
    p: str,
    kind: str,
    eta: float,
    m: int,
    steps: int,
    generator: torch.Generator,
) -> float:
    """Worst-case m-sharpness: the mean over the batches x[i : i + m] (in order, each
    weighted by its size, a shorter last one included) of worst_case's increase, each
    batch with its own delta and random start (drawn in batch order from `generator`)."""
    c = scales(model, kind, eta)
    total = 0.0
    for i in range(0, len(x), m):
        xb, yb = x[i : i + m], y[i : i + m]
        total += worst_case(model, xb, yb, loss_fn, rho, p, c, steps, generator).increase * len(xb)
    return total / len(x)
