"""validate: check the whole params file before any other stage runs.

Every stage depends on the stamp this writes, so DVC runs this first and stops at a bad
value with the project's message (key, value, allowed values) before it removes or
touches any other output. The stamp's bytes never change: a valid edit of params.yaml
reruns this stage alone, and only the stages whose own params changed follow it.
"""

from advland.pipeline.settings import check
from advland.pipeline.stage import OUT, run_stage


def main(args) -> None:
    check(args.params, args.stamp)


if __name__ == "__main__":
    run_stage(main, __doc__, stamp=OUT)
