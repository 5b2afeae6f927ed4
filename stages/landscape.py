"""landscape: 1D curve and 2D surface along filter-normalized random directions and along
the Hessian's top eigenvectors, every seed of one run."""

from advland.core.config import load_params
from advland.data import load_prepared
from advland.measure.landscape import landscape_seeds
from advland.pipeline.stage import IN, NAME, OUT, SCRATCH, run_stage


def main(args) -> dict:
    params = load_params(args.params)
    run = params.run(args.run_id)
    return landscape_seeds(
        run,
        load_prepared(args.data),
        params.seeds,
        args.models,
        params.landscape_for(run),
        params.noise.distribution,
        params.train_for(run).hardware.device,
        args.vectors,
        (args.curve, args.surface, args.eigen_curve, args.eigen_surface),
        partial_dir=args.partial,
    )


if __name__ == "__main__":
    run_stage(
        main,
        __doc__,
        run_id=NAME,
        data=IN,
        models=IN,
        vectors=IN,
        curve=OUT,
        surface=OUT,
        eigen_curve=OUT,
        eigen_surface=OUT,
        metrics=OUT,
        partial=SCRATCH,
    )
