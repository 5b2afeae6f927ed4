"""metrics/hessian/<run_id>.json: one run's sharpness, per seed (advland.measure.hessian).

Eigenvalues are of the Hessian of the training objective at the final weights, with
the inputs fixed at the run's perturbation; `<i>` numbers the top-k, largest first."""

from __future__ import annotations

import re

from pydantic import ValidationInfo, model_validator

from advland.metrics import Metrics, Real, Seeds

NUMBERED = ("lambda{}", "scaled_lambda{}", "lambda{}_residual", "cf_lambda{}", "cf_scaled_lambda{}",
            "pyhessian_lambda{}")  # fmt: skip


class HessianSeed(Metrics):
    """One seed's top-k eigenvalues (lambda<i>) and trace, and their checks.

    Families: lambda<i> (i >= 2), scaled_lambda<i> = lambda<i> ||w||^2; Lanczos:
    lambda<i>_residual ||H v - lambda v||; linear adversarial runs: cf_lambda<i> and
    cf_scaled_lambda<i> of the closed-form objective; pyhessian_lambda<i> (PyHessian's).
    """

    FAMILIES = tuple(name.format(r"\d+") for name in NUMBERED)

    weight_norm: Real  # ||w||_2, as in metrics/train
    objective: Real  # the training objective at the fixed inputs
    lanczos_hvps: int | None = None  # Hessian-vector products that Lanczos used
    max_rel_residual: Real | None = None  # Lanczos: max_i residual_i / |lambda_i|
    lambda1: Real  # the largest eigenvalue
    trace: Real  # exact, or Hutchinson's estimate with Lanczos
    theory_gap_fixed: Real | None = None  # linear, exact: max rel. error of the closed form
    cf_trace: Real | None = None  # linear adversarial runs: the closed-form objective's trace
    theory_gap_cf: Real | None = None  # its Hessian against autograd, max rel. error
    pyhessian_hvps: int | None = None  # PyHessian's Hessian-vector products
    pyhessian_rel_err: Real | None = None  # PyHessian top-k against ours, max rel. error

    @model_validator(mode="after")
    def _complete(self, info: ValidationInfo) -> HessianSeed:
        """Each numbered family present holds 1..k (k eigenvalues, lambda and scaled_lambda
        always); with the run in the context, a linear adversarial run has the closed form."""
        keys = list(self.model_dump())
        k = sum(bool(re.fullmatch(r"lambda\d+", key)) for key in keys)
        for i, name in enumerate(NUMBERED):
            found = {key for key in keys if re.fullmatch(name.format(r"\d+"), key)}
            if (found or i < 2) and found != {name.format(j) for j in range(1, k + 1)}:
                raise ValueError(f"{name.format('<i>')}: expected i = 1..{k}, got {sorted(found)}")
        run = info.context or {}
        if run.get("linear") and run.get("adversarial"):
            self.require(["cf_lambda1", "cf_trace", "theory_gap_cf"], "a linear adversarial run")
        return self


class HessianMetrics(Seeds[HessianSeed]):
    """The hessian stage's file."""
