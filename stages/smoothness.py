"""smoothness: Kanai et al.'s smoothness of the adversarial loss, measured as the
gradient's local Lipschitz ratio at trained logistic-regression weights."""

from advland.core.config import load_params
from advland.data import load_prepared
from advland.pipeline.stage import IN, NAME, OUT, run_stage
from advland.studies.smoothness import smoothness_config, smoothness_study


def main(args) -> dict:
    params = load_params(args.params)
    cfg = smoothness_config(params, args.dataset)
    return smoothness_study(load_prepared(args.data), args.models, params.seeds[0], cfg, args.table)


if __name__ == "__main__":
    run_stage(main, __doc__, dataset=NAME, data=IN, models=IN, table=OUT, metrics=OUT)
