"""validate: check the whole params file before any other stage runs.

Every stage depends on the stamp this writes, so DVC runs this first and stops at a bad
value with the project's message (key, value, allowed values) before it removes or
touches any other output. The stamp's bytes never change: a valid edit of params.yaml
reruns this stage alone, and only the stages whose own params changed follow it.
"""

from advland.core.io import write_text
from advland.pipeline.settings import load_all
from advland.pipeline.stage import OUT, run_stage

STAMP = "params checked by stages/validate.py\n"


def main(args) -> None:
    load_all(args.params)
    write_text(args.stamp, STAMP)


if __name__ == "__main__":
    run_stage(main, __doc__, stamp=OUT)
