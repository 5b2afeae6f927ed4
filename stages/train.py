"""train: one model of the grid, named by its run id (e.g. mnist2-lr-l2-adv-0.2).

Also runs data-parallel: torchrun --nproc_per_node=N stages/train.py <run id>.
"""

import sys
from pathlib import Path
from time import perf_counter

from common import load_params, run_stage, write_metrics

from advland import distributed
from advland.data import load_prepared
from advland.train import train_run


def main() -> None:
    distributed.init_from_env()
    params = load_params()
    spec = params.run(sys.argv[1])
    start = perf_counter()
    summary = train_run(
        spec,
        load_prepared(Path(f"data/prepared/{spec.dataset}.npz")),
        params.train_for(spec),
        params.attack[spec.dataset][spec.norm],
        params.noise,
        params.seed,
        checkpoint=Path(f"models/{spec.run_id}.pt"),
        log_csv=Path(f"logs/train/{spec.run_id}.csv"),
        resume_dir=Path("models/.resume"),
    )
    if distributed.is_main():
        write_metrics(f"metrics/train/{spec.run_id}.json", summary, start)


if __name__ == "__main__":
    run_stage(main)
