"""toy: Kanai et al.'s toy loss surfaces over a 2-D weight (linear and swish; standard,
L2 and Linf adversarial) and their EntropySGD-smoothed versions."""

from advland.core.config import load_params
from advland.pipeline.stage import OUT, run_stage
from advland.studies.toy import toy_config, toy_study


def main(args) -> dict:
    return toy_study(toy_config(load_params(args.params)), args.table)


if __name__ == "__main__":
    run_stage(main, __doc__, table=OUT, metrics=OUT)
