"""hessian: top-k eigenvalues and trace of the training objective, every seed of one run,
and its spectrum (eigenvalues, top eigenvectors)."""

from advland.core.config import load_params
from advland.data import load_prepared
from advland.measure.hessian import hessian_seeds
from advland.pipeline.stage import IN, NAME, OUT, run_stage


def main(args) -> dict:
    params = load_params(args.params)
    run = params.run(args.run_id)
    return hessian_seeds(
        run,
        load_prepared(args.data),
        params.seeds,
        args.models,
        params.attack_for(run).train,
        params.noise.distribution,
        params.hessian_for(run),
        params.train_for(run).hardware.device,
        args.values,
        args.vectors,
    )


if __name__ == "__main__":
    run_stage(main, __doc__, run_id=NAME, data=IN, models=IN, values=OUT, vectors=OUT, metrics=OUT)
