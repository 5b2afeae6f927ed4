"""finetune_eval: accuracy under every attack, 1 - SSIM, sharpness and landscapes of the
clean model and of every fine-tuned one."""

from advland.core.config import load_params
from advland.core.errors import ParamsError
from advland.data import load_prepared
from advland.finetune import evaluate_seeds
from advland.pipeline.stage import IN, OUT, SCRATCH, run_stage


def main(args) -> dict:
    params = load_params(args.params)
    cfg = params.finetune
    if cfg is None:
        raise ParamsError("finetune: the section is missing from params.yaml")
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
