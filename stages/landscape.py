"""landscape: 1D curve and 2D surface along filter-normalized random directions and along
the Hessian's top eigenvectors, every seed of one run."""

from pathlib import Path

from advland.core.config import load_params
from advland.pipeline.stage import run_stage
from advland.data import load_prepared
from advland.landscape import landscape_seeds


def main(args) -> dict:
    params = load_params()
    run = params.run(args.run)
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
        partial_dir=Path("landscapes/.partial"),
    )


if __name__ == "__main__":
    run_stage(
        main,
        __doc__,
        "run",
        "data",
        "models",
        "vectors",
        "curve",
        "surface",
        "eigen_curve",
        "eigen_surface",
        "metrics",
    )
