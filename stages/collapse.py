"""collapse: Liu et al.'s collapse of adversarially trained logistic regression to w = 0,
predicted (theory.collapse_eps) against measured, per norm and box setting."""

from advland.core.config import load_params
from advland.data import load_prepared
from advland.pipeline.stage import IN, NAME, OUT, run_stage
from advland.studies.collapse import collapse_config, collapse_study


def main(args) -> dict:
    cfg = collapse_config(load_params(args.params), args.dataset)
    return collapse_study(load_prepared(args.data), cfg, args.table)


if __name__ == "__main__":
    run_stage(main, __doc__, dataset=NAME, data=IN, table=OUT, metrics=OUT)
