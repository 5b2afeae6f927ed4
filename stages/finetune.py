"""finetune: the clean model fine-tuned on clean + adversarial images of one attack."""

from advland.core.config import load_params
from advland.core.errors import ParamsError
from advland.pipeline.stage import run_stage
from advland.data import load_prepared
from advland.finetune import finetune_seeds


def main(args) -> dict:
    params = load_params()
    cfg = params.finetune
    if cfg is None or args.run not in cfg.attacks:
        raise ParamsError(f"finetune.attacks: {args.run!r} is not listed there")
    return finetune_seeds(
        args.run, load_prepared(args.data), params.seeds, cfg, args.source, args.models
    )


if __name__ == "__main__":
    run_stage(main, __doc__, "run", "data", "source", "models", "metrics")
