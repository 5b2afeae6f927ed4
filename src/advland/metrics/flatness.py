"""metrics/flatness/<run_id>.json: one run's flatness suite, per seed (advland.measure.flatness).

Per target t (own: the run's training objective at its own eps; robust: the robust
loss at the dataset's common evaluation eps; clean: the clean loss), `{t}_loss` at
the trained weights and each measure's value: `{t}_adaptive_lambda1` and
`{t}_adaptive_trace` of T H T; `{t}_avg_{plain,adaptive}_<i>` and
`{t}_worst_{l2,linf}_{plain,adaptive}_<i>` at the i-th rho of the measure's grid
(1-based, params flatness.<dataset>.<model>); `{t}_rflat_avg` and `{t}_rflat_worst`
(Stutz et al.'s robust flatness). Once per seed, at the common evaluation eps:
robust losses and accuracies (%) on the first n examples of each split, and the robust
gap train - test in percentage points.
"""

from __future__ import annotations

from advland.metrics import Metrics, Real, Seeds

TARGET = "(own|robust|clean)"
MEASURE = (
    r"loss|adaptive_lambda1|adaptive_trace|avg_(plain|adaptive)_\d+"
    r"|worst_(l2|linf)_(plain|adaptive)_\d+|rflat_(avg|worst)"
)


class FlatnessSeed(Metrics):
    """One seed's robust generalization at the common eps and its flatness measures."""

    FAMILIES = (rf"{TARGET}_({MEASURE})",)

    eval_eps: Real  # the common evaluation eps of the run's dataset and norm
    robust_train_loss: Real
    robust_test_loss: Real
    robust_train_acc: Real
    robust_test_acc: Real
    robust_gap: Real  # robust_train_acc - robust_test_acc


class FlatnessMetrics(Seeds[FlatnessSeed]):
    """The flatness stage's file."""
