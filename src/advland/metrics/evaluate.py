"""metrics/evaluate/<run_id>.json: one run's accuracies, per seed (advland.measure.evaluate).

Accuracies are in %, gaps |train - test| in percentage points."""

from __future__ import annotations

from pydantic import ValidationInfo, model_validator

from advland.metrics import Metrics, Real, Seeds


class EvaluateSeed(Metrics):
    """One seed's accuracy on clean inputs, under the evaluation PGD attack (robust) and
    under random noise of the run's norm and eps."""

    eps: Real  # the run's eps
    clean_train_acc: Real
    robust_train_acc: Real
    noise_train_acc: Real
    clean_test_acc: Real
    robust_test_acc: Real
    noise_test_acc: Real
    # linear models: under the closed-form worst case (evaluate.closed_form_check)
    cf_robust_train_acc: Real | None = None
    cf_robust_test_acc: Real | None = None
    pgd_cf_max_abs_dev: Real | None = None  # Linf only: max |x_PGD - x_closed-form|, test set
    clean_gap: Real
    robust_gap: Real
    noise_gap: Real
    cf_robust_gap: Real | None = None

    @model_validator(mode="after")
    def _closed_form(self, info: ValidationInfo) -> EvaluateSeed:
        """With the run in the context, a linear model has the closed-form accuracies."""
        if (info.context or {}).get("linear"):
            keys = ["cf_robust_train_acc", "cf_robust_test_acc", "cf_robust_gap"]
            self.require(keys, "a linear model")
        return self


class EvaluateMetrics(Seeds[EvaluateSeed]):
    """The evaluate stage's file."""
