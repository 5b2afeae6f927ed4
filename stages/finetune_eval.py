"""finetune_eval: accuracy under every attack, 1 - SSIM, sharpness and landscapes of the
clean model and of every fine-tuned one."""

from advland.core.config import load_params
from advland.data import load_prepared
from advland.pipeline.stage import IN, OUT, SCRATCH, run_stage
from advland.studies.finetune import evaluate_seeds, finetune_config


def main(args) -> dict:
    params = load_params(args.params)
    cfg = finetune_config(params)
    return evaluate_seeds(
        load_prepared(args.data),
        params.seeds,
        cfg,
        params.run(cfg.source),
        args.source,
        args.finetuned,
        args.curve,
        args.surface,
        args.partial,
    )


if __name__ == "__main__":
    run_stage(
        main,
        __doc__,
        data=IN,
        source=IN,
        finetuned=IN,
        curve=OUT,
        surface=OUT,
        metrics=OUT,
        partial=SCRATCH,
    )
