"""finetune: the clean model fine-tuned on clean + adversarial images of one attack."""

from advland.core.config import load_params
from advland.core.errors import ParamsError
from advland.data import load_prepared
from advland.pipeline.stage import IN, NAME, OUT, run_stage
from advland.studies.finetune import finetune_config, finetune_seeds


def main(args) -> dict:
    params = load_params(args.params)
    cfg = finetune_config(params)
    if args.attack not in cfg.attacks:
        raise ParamsError(f"finetune.attacks: {args.attack!r} is not listed there")
    return finetune_seeds(
        args.attack, load_prepared(args.data), params.seeds, cfg, args.source, args.models
    )


if __name__ == "__main__":
    run_stage(main, __doc__, attack=NAME, data=IN, source=IN, models=OUT, metrics=OUT)
