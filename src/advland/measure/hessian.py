"""Sharpness: top eigenvalues and trace of the Hessian of a training objective.

The objective is L(theta) = mean_i loss(f_theta(x'_i), y_i) with the inputs x'
fixed: adversarial examples recomputed at the final weights, or one noise draw.
For logistic regression the L2 closed-form objective, whose attack moves with w,
is measured too (theory.l2_adversarial_loss).

BatchNorm layers are in eval mode, with the running statistics of training held
fixed (they are buffers, not parameters): L is then a mean of per-example losses, a
fixed function of the weights, and the same function the evaluate and landscape
stages measure. In train mode each example's loss would depend on the other examples
of its batch, and the Hessian on the batch size.

Backends:
- exact: dense Hessian by torch.func (reverse-over-reverse) in float64, then eigvalsh (small models);
- lanczos: Lanczos with full reorthogonalization on Hessian-vector products, with
  each Ritz value's residual as its convergence measure (Ritz);
- pyhessian: PyHessian's power iteration with deflation, as the field's reference.

Besides the metrics, each run's spectrum is written (Liu et al. 2020 plot the top 20
eigenvalues): `spectrum_k` eigenvalues per seed (exact: every one of the dense Hessian
with `all`; Lanczos: Ritz values with their residuals), and the top EIGENVECTORS
eigenvectors, unit norm, for the landscapes along them (advland.measure.landscape).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import pandas as pd
import torch
from torch import nn
from torch.func import functional_call

from advland.core.io import atomic_outputs, pt_bytes
from advland.core.models import checkpoint_path, is_linear, load_model, per_example_loss
from advland.core.perturb import PERTURBATIONS, make_perturb
from advland.core.rng import rng, seed_global
from advland.measure import theory
from advland.measure.perseed import over_seeds
from advland.metrics.hessian import HessianMetrics

log = logging.getLogger(__name__)
HVP = Callable[[torch.Tensor], torch.Tensor]
EXACT_MAX_PARAMS = 5000  # a dense float64 Hessian of this size is 200 MB
DENSE_CHUNK = 64  # Hessian rows per vectorized pass: bounds memory for conv nets
EIGENVECTORS = 2  # top eigenvectors saved per seed: v1 for 1D landscapes, v1 and v2 for 2D


def flat_objective(model: nn.Module, x: torch.Tensor, y: torch.Tensor):
    """theta -> mean loss on fixed (x, y), with theta the model's parameters, flattened."""
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    sizes = [s.numel() for s in shapes]
    buffers = dict(model.named_buffers())

    def loss(theta: torch.Tensor) -> torch.Tensor:
        params = {n: t.view(s) for n, t, s in zip(names, theta.split(sizes), shapes, strict=True)}
        return per_example_loss(functional_call(model, {**params, **buffers}, (x,)), y).mean()

    theta = torch.cat([p.detach().flatten() for p in model.parameters()])
    return loss, theta


def dense_hessian(
    loss: Callable[[torch.Tensor], torch.Tensor], theta: torch.Tensor
) -> torch.Tensor:
    """The full Hessian, symmetrized (reverse-over-reverse, vectorized: on LR 20x
    faster than torch.func.hessian's forward-over-reverse)."""
    h = torch.func.jacrev(torch.func.jacrev(loss), chunk_size=DENSE_CHUNK)(theta)
    return (h + h.T) / 2


def make_hvp(loss: Callable[[torch.Tensor], torch.Tensor], theta: torch.Tensor) -> HVP:
    """v -> H v = d(g . v)/dtheta, reverse over reverse: on the CPU as fast as forward
    over reverse or faster for the CNN (benchmarks/deep_scale.py)."""

    def hvp(v: torch.Tensor) -> torch.Tensor:
        t = theta.detach().requires_grad_()
        (g,) = torch.autograd.grad(loss(t), t, create_graph=True)
        return torch.autograd.grad(g, t, v.to(t.dtype))[0]

    return hvp


class CountingHVP:
    """Wraps an HVP and counts its calls."""

    def __init__(self, hvp: HVP):
        self.hvp, self.calls = hvp, 0

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.hvp(v)


class Ritz(NamedTuple):
    """Top-k Ritz values (descending) and their residuals ||H v - theta v|| = beta_m |s_m|,
    beta_m the last Lanczos coefficient and s_m the last entry of the Ritz vector in the
    Krylov basis. H symmetric: an eigenvalue of H lies within each residual of its value."""

    values: torch.Tensor
    residuals: torch.Tensor
    vectors: torch.Tensor | None = None  # (n, dim): the top n Ritz vectors, unit norm


def orient(vectors: torch.Tensor) -> torch.Tensor:
    """Each row times +-1 so that its entry of largest magnitude is positive: an
    eigenvector's sign is arbitrary, this fixes it."""
    rows = torch.arange(len(vectors))
    return vectors * vectors[rows, vectors.abs().argmax(1)].sign()[:, None]


def lanczos_ritz(
    hvp: HVP,
    dim: int,
    k: int,
    iters: int,
    dtype=torch.float64,
    seed: int = 0,
    tol: float = 1e-10,
    vectors: int = 0,
) -> Ritz:
    """Top-k Ritz pairs' values and residuals after `iters` Lanczos steps (full
    reorthogonalization), and the top `vectors` Ritz vectors Q^T s (Q the Krylov basis)."""
    gen = rng(seed, "lanczos")
    q = torch.randn(dim, generator=gen, dtype=dtype)
    basis = [q / q.norm()]
    alphas, betas = [], []
    for _ in range(min(iters, dim)):
        w = hvp(basis[-1]).to(dtype)
        alphas.append(torch.dot(w, basis[-1]))
        q_mat = torch.stack(basis)
        for _ in range(2):  # twice is enough (Kahan)
            w = w - q_mat.T @ (q_mat @ w)
        beta = w.norm()
        if beta < tol * max(1.0, abs(alphas[-1].item())):
            break
        betas.append(beta)
        basis.append(w / beta)
    t = torch.diag(torch.stack(alphas))
    if len(alphas) > 1:
        off = torch.stack(betas[: len(alphas) - 1])
        t += torch.diag(off, 1) + torch.diag(off, -1)
    values, eigvecs = torch.linalg.eigh(t)
    s = eigvecs.flip(1)
    top, residuals = values.flip(0)[:k], beta * s[-1, :k].abs()
    ritz = orient(s[:, :vectors].T @ torch.stack(basis[: len(alphas)])) if vectors else None
    return Ritz(top, residuals, ritz)


def lanczos(
    hvp: HVP, dim: int, k: int, iters: int, dtype=torch.float64, seed: int = 0, tol: float = 1e-10
) -> torch.Tensor:
    """Top-k Ritz values of H after `iters` Lanczos steps (lanczos_ritz)."""
    return lanczos_ritz(hvp, dim, k, iters, dtype, seed, tol).values


def hutchinson_trace(hvp: HVP, dim: int, samples: int, dtype=torch.float64, seed: int = 0) -> float:
    """tr H ~ mean_j z_j^T H z_j with Rademacher z_j."""
    gen = rng(seed, "hutchinson")
    total = 0.0
    for _ in range(samples):
        z = torch.randint(0, 2, (dim,), generator=gen, dtype=dtype) * 2 - 1
        total += torch.dot(z, hvp(z).to(dtype)).item()
    return total / samples


class Spectrum(NamedTuple):
    """What spectra files hold for one seed: eigenvalues (descending), their residuals
    (NaN for the exact backend), the backend, and the top eigenvectors (rows, unit norm)."""

    values: torch.Tensor
    residuals: torch.Tensor
    method: str
    vectors: torch.Tensor


def exact_spectrum(loss, theta: torch.Tensor, k: int) -> dict:
    """Top-k eigenvalues, every eigenvalue (descending) and trace of the dense Hessian."""
    h = dense_hessian(loss, theta)
    eig = torch.linalg.eigvalsh(h)
    top = eig.flip(0)[:k].tolist()
    return {"top": top, "all": eig.flip(0), "trace": eig.sum().item(), "hessian": h}


def top_eigenvectors(h: torch.Tensor, n: int) -> torch.Tensor:
    """The eigenvectors of the n largest eigenvalues of a symmetric matrix, as rows."""
    return orient(torch.linalg.eigh(h).eigenvectors[:, -n:].flip(1).T)


def lanczos_spectrum(
    loss,
    theta: torch.Tensor,
    k: int,
    iters: int,
    trace_samples: int,
    n_values: int = 0,
    vectors: int = 0,
) -> dict:
    """Lanczos top-k with residuals and Hutchinson's trace; the Krylov basis and sums are
    float64 whatever the HVPs' dtype (a float32 HVP adds ~1e-6 relative error that the
    residuals, which measure the Krylov approximation, do not include). The same Lanczos
    run also gives the top max(k, n_values) Ritz values and the top `vectors` Ritz vectors."""
    hvp = CountingHVP(make_hvp(loss, theta))
    ritz = lanczos_ritz(hvp, theta.numel(), max(k, n_values), iters, vectors=vectors)
    lanczos_calls = hvp.calls
    trace = hutchinson_trace(hvp, theta.numel(), trace_samples)
    return {
        "top": ritz.values[:k].tolist(),
        "residuals": ritz.residuals[:k].tolist(),
        "trace": trace,
        "hvps": lanczos_calls,
        "ritz": ritz,
    }


def pyhessian_top(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, k: int, seed: int = 0
) -> dict:
    """PyHessian's top-k (power iteration, deflation, rel. tol 1e-3) and its HVP count.

    PyHessian leaves the model in eval mode with .grad filled; both are undone here.
    """
    import importlib

    ph = importlib.import_module("pyhessian.hessian")  # the module; the package shadows it

    calls = {"n": 0}
    original = ph.hessian_vector_product

    def counted(*args, **kwargs):
        calls["n"] += 1
        return original(*args, **kwargs)

    was_training = model.training
    seed_global(seed)  # PyHessian draws its start vectors from the global RNG
    ph.hessian_vector_product = counted
    try:
        comp = ph.hessian(
            model, lambda out, t: per_example_loss(out, t).mean(), data=(x, y), cuda=False
        )
        top, _ = comp.eigenvalues(top_n=k)
    finally:
        ph.hessian_vector_product = original
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    return {"top": sorted(top, reverse=True), "hvps": calls["n"]}


def _named(prefix: str, values: list[float]) -> dict[str, float]:
    return {f"{prefix}{i + 1}": v for i, v in enumerate(values)}


def _relative_gap(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |a|: how far a closed form is from the autograd Hessian."""
    return ((a - b).abs().max() / a.abs().max().clamp_min(1e-300)).item()


def sharpness_run(
    model: nn.Module,
    run,
    x: torch.Tensor,
    y: torch.Tensor,
    perturb,
    cfg,
    weight_norm: float,
) -> tuple[dict[str, float], Spectrum]:
    """Top-k eigenvalues and trace of the run's training objective at its final weights,
    and its spectrum (cfg.spectrum_k values and the top EIGENVECTORS eigenvectors).

    `perturb` makes the fixed inputs x' (the run's own attack or one noise draw).
    Eigenvalues are also reported times ||w||^2, the filter-normalized sharpness of LR.
    For a linear model the closed-form objective of an adversarial run
    (theory.CLOSED_FORMS) and the gap between the autograd Hessian and theory's
    closed form are recorded as well.
    """
    device = next(model.parameters()).device
    x, y = x.to(device), y.to(device)
    x_fixed = torch.cat(
        [perturb(model, x[i : i + 1024], y[i : i + 1024]) for i in range(0, len(x), 1024)]
    )
    dtype = getattr(torch, cfg.dtype)
    net = model.to(dtype)
    loss, theta = flat_objective(net, x_fixed.to(dtype), y)
    out: dict[str, float] = {"weight_norm": weight_norm, "objective": loss(theta).item()}
    backend = cfg.backend
    if backend == "auto":
        backend = "exact" if theta.numel() <= EXACT_MAX_PARAMS else "lanczos"
    n_values = {None: cfg.top_k, "all": theta.numel()}.get(cfg.spectrum_k, cfg.spectrum_k)
    if backend == "exact":
        spec_ = exact_spectrum(loss, theta, cfg.top_k)
        nan = torch.full((min(n_values, theta.numel()),), float("nan"), dtype=torch.float64)
        vectors = top_eigenvectors(spec_["hessian"], EIGENVECTORS)
        spectrum = Spectrum(spec_["all"][:n_values], nan, "exact", vectors)
    else:
        spec_ = lanczos_spectrum(
            loss, theta, cfg.top_k, cfg.lanczos_iters, cfg.trace_samples, n_values, EIGENVECTORS
        )
        ritz = spec_["ritz"]
        spectrum = Spectrum(
            ritz.values[:n_values], ritz.residuals[:n_values], "lanczos", ritz.vectors
        )
        out["lanczos_hvps"] = spec_["hvps"]
        out |= {f"lambda{i + 1}_residual": r for i, r in enumerate(spec_["residuals"])}
        out["max_rel_residual"] = max(
            r / abs(v) for r, v in zip(spec_["residuals"], spec_["top"], strict=True)
        )
    out |= _named("lambda", spec_["top"]) | {"trace": spec_["trace"]}
    out |= _named("scaled_lambda", [v * weight_norm**2 for v in spec_["top"]])

    if is_linear(model):  # closed forms to check against
        xf = x_fixed.double().flatten(1)
        if "hessian" in spec_:
            out["theory_gap_fixed"] = _relative_gap(
                spec_["hessian"], theory.fixed_input_hessian(theta, xf, y)
            )
        if PERTURBATIONS[run.noise].moves_with_weights:
            closed = theory.CLOSED_FORMS[run.norm](theta, x.double().flatten(1), y, run.eps)
            cf_exact = exact_spectrum(closed.loss, theta, cfg.top_k)
            out |= _named("cf_lambda", cf_exact["top"]) | {"cf_trace": cf_exact["trace"]}
            out |= _named("cf_scaled_lambda", [v * weight_norm**2 for v in cf_exact["top"]])
            out["theory_gap_cf"] = _relative_gap(cf_exact["hessian"], closed.hessian)
    if cfg.pyhessian:
        ref = pyhessian_top(net, x_fixed.to(dtype), y, cfg.top_k)
        exact_top = torch.tensor(spec_["top"])
        out |= _named("pyhessian_lambda", ref["top"]) | {"pyhessian_hvps": ref["hvps"]}
        out["pyhessian_rel_err"] = (
            ((torch.tensor(ref["top"]) - exact_top).abs() / exact_top.abs()).max().item()
        )
    model.float()
    return out, spectrum


def save_spectra(spectra: dict[int, Spectrum], values_csv: Path, vectors_pt: Path) -> None:
    """values_csv: seed, rank (1 = largest), eigenvalue, residual, method; vectors_pt:
    {seed: (EIGENVECTORS, dim) float64}, the same numbers giving the same bytes (`pt_bytes`)."""
    frame = pd.concat(
        [
            pd.DataFrame(
                {
                    "seed": seed,
                    "rank": range(1, len(s.values) + 1),
                    "eigenvalue": s.values.double().numpy(),
                    "residual": s.residuals.double().numpy(),
                    "method": s.method,
                }
            )
            for seed, s in spectra.items()
        ],
        ignore_index=True,
    )
    vectors = pt_bytes({seed: s.vectors.double().cpu() for seed, s in spectra.items()})
    with atomic_outputs(values_csv, vectors_pt) as (tmp_csv, tmp_pt):
        frame.to_csv(tmp_csv, index=False)
        tmp_pt.write_bytes(vectors)


def hessian_seeds(
    run,
    data,
    seeds: list[int],
    model_dir: Path,
    attack,
    distribution: str,
    cfg,
    device: str,
    values_csv: Path,
    vectors_pt: Path,
) -> HessianMetrics:
    """sharpness_run for every seed of a run, on the first cfg.n_samples examples it
    was trained on, with the run's training perturbation (`attack` is its
    config.AttackConfig) drawn once at the final weights; writes the spectra
    (save_spectra) and returns per-seed values and their mean."""

    def measure(seed: int) -> tuple[dict, Spectrum]:
        model, checkpoint = load_model(checkpoint_path(model_dir, seed), device)
        seen = data.seen(checkpoint["n_train"], cfg.n_samples, 0)
        x, y = seen.x_train, seen.y_train
        gen = rng(seed, "hessian")
        perturb = make_perturb(run.noise, run.norm, run.eps, attack, distribution, gen)
        return sharpness_run(model, run, x, y, perturb, cfg, checkpoint["weight_norm"])

    summary, spectra = over_seeds(seeds, measure)
    save_spectra(spectra, values_csv, vectors_pt)
    return HessianMetrics.model_validate(summary)
