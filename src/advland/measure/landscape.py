"""Filter-normalized weight-loss landscapes (Li et al. 2018).

A direction d has the shape of the weights; each filter d_f (a conv output channel
or a row of a linear layer) is rescaled to the norm of that filter in the weights,
||d_f|| = ||theta_f||. Biases and BN parameters get d = 0 unless included, then
||d_p|| = ||theta_p||. For logistic regression this is ||d|| = ||w||.

1D: L(theta + a d1) for a in [-alpha, alpha];  2D: L(theta + a d1 + b d2).
At every point we record clean loss/accuracy and the training objective's
(`obj_*`): adversarial loss with the attack re-run at that point (`rerun`, default)
or with adversarial examples fixed at the centre (`fixed`); for random-noise runs,
one fixed noise draw. BatchNorm runs in eval mode with the running statistics of
training, as in the hessian stage (see there why). Logistic regression evaluates many points in one batched
computation (StackedLogisticRegression); other models go point by point.

Along the Hessian's top eigenvectors (Liu et al. 2020; saved by the hessian stage,
unit norm) the same curves are drawn with d_k = s v_k, where s = direction_scale is the
norm that every filter-normalized random direction has: one unit of alpha is a step of
the same length along either kind of direction, so the axes compare. Near alpha = 0
the curve along v1 is L0 + a g.d + a^2 lambda1 s^2 / 2 for the objective whose Hessian
gave v1 (the hessian stage's: inputs fixed at the centre, its own examples).
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
from pathlib import Path

import pandas as pd
import torch
from torch import nn
from torch.linalg import vector_norm
from torch.nn.utils import parameters_to_vector, vector_to_parameters
from tqdm import tqdm

from advland.core.errors import CheckpointError, DataError
from advland.core.io import atomic_outputs, load_pt
from advland.core.models import (
    Linear,
    checkpoint_path,
    is_linear,
    load_model,
    per_example_loss,
    predict,
)
from advland.core.norms import NORMS
from advland.core.perturb import PERTURBATIONS, Perturb, make_perturb
from advland.core.rng import rng
from advland.measure.perseed import over_seeds
from advland.metrics.landscape import LandscapeMetrics
from advland.sources import file_digest

log = logging.getLogger(__name__)


def filter_normalized_direction(
    model: nn.Module, generator: torch.Generator, include_bias: bool = False
) -> torch.Tensor:
    """A random direction as one flat vector, filter-normalized (see module doc)."""
    parts = []
    for p in model.parameters():
        d = torch.randn(p.shape, generator=generator, dtype=p.dtype)
        if p.ndim <= 1:
            d = d * (p.norm() / d.norm().clamp_min(1e-12)) if include_bias else torch.zeros_like(p)
        else:
            dims = tuple(range(1, p.ndim))  # one filter = one output channel / row
            d = d * (
                vector_norm(p.detach(), dim=dims, keepdim=True)
                / vector_norm(d, dim=dims, keepdim=True).clamp_min(1e-12)
            )
        parts.append(d.flatten())
    return torch.cat(parts).to(next(model.parameters()).device)


def direction_scale(model: nn.Module, include_bias: bool = False) -> float:
    """||d|| of every filter-normalized direction: the norm of the weights it moves,
    sqrt(sum_f ||theta_f||^2) over its filters (and biases if included); ||w|| for LR."""
    moved = [p for p in model.parameters() if p.ndim > 1 or include_bias]
    return math.sqrt(sum(p.detach().double().pow(2).sum().item() for p in moved))


def eigen_directions(
    model: nn.Module, vectors: torch.Tensor, include_bias: bool = False
) -> torch.Tensor:
    """Eigenvectors (rows) scaled to direction_scale, in the model's dtype and device."""
    p = next(model.parameters())
    unit = vectors / vectors.norm(dim=1, keepdim=True)
    return (direction_scale(model, include_bias) * unit).to(p.device, p.dtype)


def load_eigenvectors(path: Path) -> dict[int, torch.Tensor]:
    """{seed: (n, dim) eigenvectors} as the hessian stage saved them (through `load_pt`)."""
    vectors = load_pt(path, "eigenvector file")
    if not isinstance(vectors, dict):
        raise CheckpointError(f"{path}: expected {{seed: eigenvectors}}; re-run the hessian stage")
    return vectors


class StackedLogisticRegression(Linear):
    """P logistic regressions at once: rows are P blocks of the same n inputs."""

    def __init__(self, thetas: torch.Tensor):
        super().__init__()
        self.w, self.b = thetas[:, :-1], thetas[:, -1]

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        p = len(self.w)
        xs = x.reshape(p, -1, self.w.shape[1])
        return torch.baddbmm(self.b.view(p, 1, 1), xs, self.w.unsqueeze(2)).view(p, -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._logits(x).flatten()

    def shared_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of every model on the same inputs, (P, n) = W X^T + b: one GEMM, no copies."""
        return torch.addmm(self.b[:, None], self.w, x.flatten(1).T)

    @torch.no_grad()
    def ascent_direction(self, y: torch.Tensor, norm: str) -> torch.Tensor:
        """As LogisticRegression.ascent_direction, each block with its own w."""
        p = len(self.w)
        y_pm = (2 * y - 1).to(self.w.dtype).view(p, -1, 1)
        return (-y_pm * NORMS[norm].unit(self.w)[:, None, :]).view(len(y), -1)


def _point_models(model: nn.Module, thetas: torch.Tensor, per_chunk: int):
    """Yield (module, number of points) covering all thetas, in order."""
    if is_linear(model):
        for i in range(0, len(thetas), per_chunk):
            yield (
                StackedLogisticRegression(thetas[i : i + per_chunk]),
                len(thetas[i : i + per_chunk]),
            )
    else:
        for theta in thetas:
            m = copy.deepcopy(model)
            vector_to_parameters(theta, m.parameters())
            yield m.eval(), 1


@torch.no_grad()
def _loss_acc(
    model: nn.Module,
    points: int,
    x: torch.Tensor,
    y: torch.Tensor,
    perturb: Perturb | None,
    batch: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean loss and accuracy (%) of each of `points` stacked models on (x, y)."""
    loss_sum, correct = torch.zeros(points), torch.zeros(points)
    for i in range(0, len(x), batch):
        xb, yb = x[i : i + batch], y[i : i + batch]
        yr = yb.repeat(points)
        if perturb is None and isinstance(model, StackedLogisticRegression):
            logits = model.shared_logits(xb).flatten()
        else:
            xr = xb.repeat(points, *[1] * (x.ndim - 1))
            logits = model(perturb(model, xr, yr) if perturb is not None else xr)
        loss_sum += per_example_loss(logits, yr).view(points, -1).sum(1).cpu()
        correct += (predict(logits) == yr).float().view(points, -1).sum(1).cpu()
    return loss_sum / len(x), correct / len(x) * 100


def evaluate_points(
    model: nn.Module,
    thetas: torch.Tensor,
    splits: dict,
    perturb: Perturb | None,
    fixed_inputs: dict | None,
    rows: int = 16384,
    attack_rows: int = 256,
) -> pd.DataFrame:
    """Clean and objective loss/accuracy at each weight vector in `thetas` (P, D).

    splits: {"train": (x, y), "test": (x, y)}. The objective re-runs `perturb` at
    each point, or uses `fixed_inputs` {split: x'} computed once at the centre.
    Without an attack, up to `rows` (point, example) pairs go through one forward;
    with one, `attack_rows` (small blocks stay in cache, which is what PGD needs).
    """
    cols: dict[str, torch.Tensor] = {}
    for split, (x, y) in splits.items():
        for kind in ("clean", "obj"):
            xs = fixed_inputs[split] if (kind == "obj" and fixed_inputs) else x
            pert = perturb if (kind == "obj" and not fixed_inputs) else None
            block = attack_rows if pert is not None else rows
            batch = min(len(x), block)
            results = [
                _loss_acc(m, p, xs, y, pert, batch)
                for m, p in _point_models(model, thetas, max(1, block // batch))
            ]
            cols[f"{split}_{kind}_loss"] = torch.cat([r[0] for r in results])
            cols[f"{split}_{kind}_acc"] = torch.cat([r[1] for r in results])
    return pd.DataFrame({k: v.double().numpy() for k, v in cols.items()})


def fixed_objective_inputs(model: nn.Module, splits: dict, perturb: Perturb) -> dict:
    """x' at the centre, for the `fixed` mode (and for random noise, one draw)."""
    return {split: perturb(model, x, y) for split, (x, y) in splits.items()}


def curve_1d(
    model: nn.Module,
    direction: torch.Tensor,
    alphas: torch.Tensor,
    splits: dict,
    perturb: Perturb | None,
    fixed_inputs: dict | None,
) -> pd.DataFrame:
    theta = parameters_to_vector(model.parameters()).detach()
    thetas = theta[None, :] + alphas[:, None] * direction[None, :]
    frame = evaluate_points(model, thetas, splits, perturb, fixed_inputs)
    frame.insert(0, "alpha", alphas.double().numpy().round(6))
    return frame


def surface_2d(
    model: nn.Module,
    d1: torch.Tensor,
    d2: torch.Tensor,
    alphas: torch.Tensor,
    splits: dict,
    perturb: Perturb | None,
    fixed_inputs: dict | None,
    partial: Path,
    rows_per_chunk: int = 16,
) -> pd.DataFrame:
    """The 2D grid, saved chunk by chunk to `partial`: an interrupted run resumes there."""
    grid = torch.cartesian_prod(alphas, alphas)
    done = pd.read_csv(partial) if partial.is_file() else pd.DataFrame()
    start = len(done)
    if start:
        log.info("resuming 2D grid at point %d of %d from %s", start, len(grid), partial)
    theta = parameters_to_vector(model.parameters()).detach()
    frames = [done] if start else []
    for i in tqdm(range(start, len(grid), rows_per_chunk), desc="2D grid", leave=False):
        ab = grid[i : i + rows_per_chunk]
        thetas = theta[None, :] + ab[:, :1] * d1[None, :] + ab[:, 1:] * d2[None, :]
        frame = evaluate_points(model, thetas, splits, perturb, fixed_inputs)
        frame.insert(0, "beta", ab[:, 1].double().numpy().round(6))
        frame.insert(0, "alpha", ab[:, 0].double().numpy().round(6))
        frames.append(frame)
        with atomic_outputs(partial) as (tmp,):
            pd.concat(frames, ignore_index=True).to_csv(tmp, index=False)
    return pd.concat(frames, ignore_index=True)


def partial_path(folder: Path, run_id: str, checkpoint_sha: str, settings: dict) -> Path:
    """Where an unfinished 2D grid lives, keyed by the checkpoint and every setting."""
    key = hashlib.sha256(
        (checkpoint_sha + json.dumps(settings, sort_keys=True)).encode()
    ).hexdigest()
    return folder / f"{run_id}-{key[:16]}.csv"


def landscapes(
    model: nn.Module,
    d1: torch.Tensor,
    d2: torch.Tensor,
    alpha: float,
    points: tuple[int, int],
    splits: dict,
    perturb: Perturb,
    fixed: dict | None,
    partial: Path,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """1D curve along d1 and 2D surface over (d1, d2), `points` = (1D, 2D side) on
    [-alpha, alpha] (0: an empty frame)."""
    curve = surface = pd.DataFrame()
    if points[0]:
        log.info("1D curve: %d points", points[0])
        alphas = torch.linspace(-alpha, alpha, points[0])
        curve = curve_1d(model, d1, alphas, splits, perturb, fixed)
    if points[1]:
        log.info("2D surface: %d x %d points", points[1], points[1])
        alphas = torch.linspace(-alpha, alpha, points[1])
        partial.parent.mkdir(parents=True, exist_ok=True)
        surface = surface_2d(model, d1, d2, alphas, splits, perturb, fixed, partial)
    return curve, surface


def landscape_run(
    model: nn.Module,
    splits: dict,
    perturb: Perturb,
    rerun: bool,
    cfg,
    partials: tuple[Path, ...],
    vectors: torch.Tensor | None = None,
) -> tuple[list[pd.DataFrame], dict[str, float]]:
    """1D curves and 2D surfaces of one model along random directions and, given
    `vectors`, along the Hessian's top eigenvectors (rows), and the curves' summaries
    (curve_summary; eigen_*: along v1).

    `perturb` is the run's objective perturbation; with rerun=False (or random
    noise, which does not depend on the weights) it is applied once at the centre.
    The 2D grids are saved chunk by chunk to `partials`, removed at the end.
    """
    gen = rng(cfg.direction_seed, "directions")
    d1 = filter_normalized_direction(model, gen, cfg.include_bias)
    d2 = filter_normalized_direction(model, gen, cfg.include_bias)
    fixed = None if rerun else fixed_objective_inputs(model, splits, perturb)
    points = (cfg.points_1d, cfg.points_2d)
    frames = list(landscapes(model, d1, d2, cfg.alpha, points, splits, perturb, fixed, partials[0]))
    summary = curve_summary(frames[0])
    if vectors is None:
        return frames, summary
    e = eigen_directions(model, vectors, cfg.include_bias)
    points = (cfg.eigen_points_1d, cfg.eigen_points_2d)
    alpha = cfg.eigen_alpha or cfg.alpha
    frames += landscapes(model, e[0], e[-1], alpha, points, splits, perturb, fixed, partials[1])
    if cfg.eigen_points_1d:
        summary |= {f"eigen_{k}": v for k, v in curve_summary(frames[2]).items()}
    return frames, summary


def landscape_seeds(
    run,
    data,
    seeds: list[int],
    model_dir: Path,
    cfg,
    distribution: str,
    device: str,
    vectors_pt: Path,
    outs: tuple[Path, Path, Path, Path],
    partial_dir: Path,
) -> LandscapeMetrics:
    """Landscapes of every seed of a run, on the first cfg.n_train examples it was
    trained on and the first cfg.n_test test examples, written as CSVs with a `seed`
    column (atomically, once all seeds are done): `outs` = random 1D, random 2D, eigen 1D,
    eigen 2D (an eigen file is empty when its points are 0); returns the curve summaries
    over seeds."""
    partials: list[Path] = []
    rerun = cfg.attack == "rerun" and PERTURBATIONS[run.noise].moves_with_weights
    eigenvectors = load_eigenvectors(vectors_pt)

    def measure(seed: int) -> tuple[dict, list[pd.DataFrame]]:
        if seed not in eigenvectors:
            raise DataError(f"{vectors_pt}: no eigenvectors for seed {seed}; re-run hessian")
        checkpoint = checkpoint_path(model_dir, seed)
        model, payload = load_model(checkpoint, device)
        seen = data.seen(payload["n_train"], cfg.n_train, cfg.n_test)
        dev = next(model.parameters()).device
        gen = rng(seed, "landscape")
        perturb = make_perturb(run.noise, run.norm, run.eps, cfg.pgd, distribution, gen)
        splits = {
            "train": (seen.x_train.to(dev), seen.y_train.to(dev)),
            "test": (seen.x_test.to(dev), seen.y_test.to(dev)),
        }
        digest, settings = file_digest(checkpoint), cfg.model_dump()
        vectors = eigenvectors[seed]
        key = hashlib.sha256(vectors.numpy().tobytes()).hexdigest()
        partials.append(partial_path(partial_dir, run.run_id, digest, settings))
        partials.append(partial_path(partial_dir, f"{run.run_id}-eigen", digest + key, settings))
        run_frames, summary = landscape_run(
            model, splits, perturb, rerun, cfg, tuple(partials[-2:]), vectors
        )
        return summary, [
            frame.assign(seed=seed)[["seed", *frame.columns]] if len(frame) else frame
            for frame in run_frames
        ]

    summary, per_seed = over_seeds(seeds, measure)
    with atomic_outputs(*outs) as tmps:
        for i, tmp in enumerate(tmps):
            frame = pd.concat([frames[i] for frames in per_seed.values()], ignore_index=True)
            (frame if len(frame) else pd.DataFrame(columns=["seed", "alpha"])).to_csv(
                tmp, index=False
            )
    for partial in partials:
        partial.unlink(missing_ok=True)
    return LandscapeMetrics.model_validate(summary)


def curve_summary(curve: pd.DataFrame, column: str = "train_obj_loss") -> dict[str, float]:
    """curvature = (L(h) - 2 L(0) + L(-h)) / h^2 at alpha = 0 (alpha in units of ||d|| = ||w||
    for LR), and rise = mean(L(-alpha), L(alpha)) - L(0)."""
    loss = curve.set_index("alpha")[column]
    alphas = loss.index.to_numpy()
    i = int(abs(alphas).argmin())
    if not 0 < i < len(alphas) - 1 or alphas[i] != 0:
        raise ValueError("the 1D grid needs an odd number of points so that alpha = 0 is on it")
    h = alphas[i + 1] - alphas[i]
    return {
        "curvature_1d": float((loss.iloc[i + 1] - 2 * loss.iloc[i] + loss.iloc[i - 1]) / h**2),
        "rise_1d": float((loss.iloc[0] + loss.iloc[-1]) / 2 - loss.iloc[i]),
        "centre_loss": float(loss.iloc[i]),
    }
