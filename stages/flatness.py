"""flatness: the flatness suite of one run, every seed: adaptive Hessian, average and
worst-case sharpness, robust flatness, on its own, the common robust and the clean loss."""

from advland.core.config import load_params
from advland.data import load_prepared
from advland.measure.flatness import flatness_config, flatness_seeds
from advland.pipeline.stage import IN, NAME, OUT, run_stage


def main(args) -> dict:
    params = load_params(args.params)
    run = params.run(args.run_id)
    return flatness_seeds(
        run,
        load_prepared(args.data),
        params.seeds,
        args.models,
        params.attack_for(run),
        params.noise.distribution,
        flatness_config(params, run),
        params.train_for(run).hardware.device,
    )


if __name__ == "__main__":
    run_stage(main, __doc__, run_id=NAME, data=IN, models=IN, metrics=OUT)
