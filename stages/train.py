"""train: every seed of one run, e.g. mnist2-lr-l2-adv-0p2.

Also runs data-parallel: torchrun --nproc_per_node=N stages/train.py <same arguments>.
"""

from advland.core import distributed
from advland.core.config import load_params
from advland.data import load_prepared
from advland.pipeline.stage import IN, NAME, OUT, SCRATCH, run_stage
from advland.train import train_seeds


def main(args) -> dict:
    distributed.init_from_env()
    params = load_params(args.params)
    run = params.run(args.run_id)
    return train_seeds(
        run,
        load_prepared(args.data),
        params.train_for(run),
        params.attack_for(run),
        params.noise,
        params.seeds,
        model_dir=args.models,
        log_csv=args.log_csv,
        resume_dir=args.resume,
    )


if __name__ == "__main__":
    run_stage(
        main, __doc__, run_id=NAME, data=IN, models=OUT, log_csv=OUT, metrics=OUT, resume=SCRATCH
    )
