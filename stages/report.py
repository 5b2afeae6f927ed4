"""report: reports/report.md and report.html, figures and tables, from all metrics."""

import json
from pathlib import Path

import yaml
from common import load_params, run_stage

from advland.io import write_json
from advland.report import build_report


def main() -> None:
    params = load_params()
    data_info = {
        d: json.loads(Path(f"data/prepared/{d}.json").read_text()) for d in params.prepare.datasets
    }
    paper = yaml.safe_load(Path("reports/paper_values.yaml").read_text())
    verdicts = build_report(
        params.runs,
        Path("metrics"),
        Path("landscapes/1d"),
        params.model_dump(),
        data_info,
        paper,
        Path("reports"),
    )
    write_json(Path("metrics/summary.json"), verdicts)


if __name__ == "__main__":
    run_stage(main)
