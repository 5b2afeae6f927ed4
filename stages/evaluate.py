"""evaluate: clean, noise and PGD accuracy of every seed of one run, and the robust gap."""

from advland.core.config import load_params
from advland.data import load_prepared
from advland.measure.evaluate import evaluate_seeds
from advland.pipeline.stage import IN, NAME, OUT, run_stage


def main(args) -> dict:
    params = load_params(args.params)
    run = params.run(args.run_id)
    return evaluate_seeds(
        run,
        load_prepared(args.data),
        params.seeds,
        args.models,
        params.attack_for(run).eval,
        params.noise,
        params.evaluate_for(run),
        params.train_for(run).hardware.device,
    )


if __name__ == "__main__":
    run_stage(main, __doc__, run_id=NAME, data=IN, models=IN, metrics=OUT)
