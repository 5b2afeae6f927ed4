"""metrics/finetune/<attack>.json and metrics/finetune/eval.json: the fine-tuning study
(advland.studies.finetune). Accuracies are in %, 1 - SSIM in [0, 2]."""

from __future__ import annotations

from pydantic import ValidationInfo, model_validator

from advland.metrics import Metrics, Real, Seeds

CLEAN = "clean"  # the model before fine-tuning, and the clean column of the matrix


class FinetuneSeed(Metrics):
    """One seed's fine-tuning of the clean model on clean + adversarial images."""

    clean_model_adv_train_acc: Real  # the clean model on the adversarial copies, before
    train_ssim_loss: Real  # mean 1 - SSIM between the images and their adversarial copies
    final_train_loss: Real  # last epoch's training loss
    final_train_acc: Real  # last epoch's training accuracy
    epochs: int
    n_train: int  # clean training images (the set holds twice as many)
    weight_norm: Real  # ||theta||_2 after fine-tuning


class FinetuneMetrics(Seeds[FinetuneSeed]):
    """A finetune@<attack> stage's file."""


class FinetuneEvalSeed(Metrics):
    """One seed's evaluation matrix, with `<model>` the clean model ("clean") or an
    attack's fine-tuned one, and `<attack>` "clean" or an attack's key.

    Families: acc_<model>_<attack> (test accuracy under the attack); ssim_loss_<attack>
    (the clean model's test images: mean 1 - SSIM); per model: objective_<model>,
    lambda<i>_<model> (i <= 3), trace_<model> and, with Lanczos, max_rel_residual_<model>
    (as metrics/hessian, of the clean training loss); curvature_1d_<model>,
    rise_1d_<model> and centre_loss_<model> (as metrics/landscape)."""

    FAMILIES = (
        r"acc_\w+",
        r"ssim_loss_\w+",
        r"objective_\w+",
        r"lambda[123]_\w+",
        r"trace_\w+",
        r"max_rel_residual_\w+",
        r"curvature_1d_\w+",
        r"rise_1d_\w+",
        r"centre_loss_\w+",
    )

    acc_clean_clean: Real  # the clean model on clean test images

    @model_validator(mode="after")
    def _matrix(self, info: ValidationInfo) -> FinetuneEvalSeed:
        """With the study's attack keys in the context ("attacks"), every cell is there."""
        attacks = (info.context or {}).get("attacks")
        if attacks is not None:
            models = [CLEAN, *attacks]
            per_model = ("objective", "lambda1", "trace", "curvature_1d", "rise_1d", "centre_loss")
            self.require(
                [f"acc_{m}_{a}" for m in models for a in models]
                + [f"ssim_loss_{a}" for a in attacks]
                + [f"{k}_{m}" for m in models for k in per_model],
                "the evaluation matrix of finetune.attacks",
            )
        return self


class FinetuneEvalMetrics(Seeds[FinetuneEvalSeed]):
    """The finetune_eval stage's file."""
