"""evaluate: clean, noise and PGD accuracy of one trained model, and its robust gap."""

import sys
from pathlib import Path
from time import perf_counter

from common import load_params, run_stage, write_metrics

from advland.data import load_prepared
from advland.evaluate import evaluate_run
from advland.train import load_trained


def main() -> None:
    start = perf_counter()
    params = load_params()
    spec = params.run(sys.argv[1])
    data = load_prepared(Path(f"data/prepared/{spec.dataset}.npz"))
    data = data.subset(params.evaluate.n_train, params.evaluate.n_test)
    model, _ = load_trained(Path(f"models/{spec.run_id}.pt"), data, params.train_for(spec).device)
    metrics = evaluate_run(
        model,
        spec,
        data,
        params.attack[spec.dataset][spec.norm].eval,
        params.noise,
        params.seed,
        params.evaluate.batch_size,
    )
    write_metrics(f"metrics/evaluate/{spec.run_id}.json", metrics, start)


if __name__ == "__main__":
    run_stage(main)
