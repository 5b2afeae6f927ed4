"""report: reports/report.md and report.html, figures and tables, and the verdict
summary, from every run's metrics and landscapes."""

from advland.core.config import load_params
from advland.core.io import write_json
from advland.pipeline.settings import all_settings
from advland.pipeline.stage import IN, OUT, run_stage
from advland.report import build_report
from advland.report.data import read_json, read_yaml


def main(args) -> None:
    params = load_params(args.params)
    data_info = {d: read_json(args.prepared / f"{d}.json") for d in params.prepare.datasets}
    summary = build_report(
        params.runs,
        args.metrics,
        args.landscapes,
        args.logs,
        all_settings(params),
        data_info,
        read_yaml(args.paper),
        args.out,
        args.spectra,
        args.companion,
    )
    write_json(args.summary, summary)


if __name__ == "__main__":
    run_stage(
        main,
        __doc__,
        metrics=IN,
        landscapes=IN,
        spectra=IN,
        logs=IN,
        prepared=IN,
        paper=IN,
        companion=IN,
        out=OUT,
        summary=OUT,
    )
