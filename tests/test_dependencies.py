"""DVC dependencies are complete and per run: each stage depends on exactly the modules
its script imports, and a change reruns exactly the stages that use what changed."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO
from test_pipeline import dvc, make_repo

from advland.pipeline.profiles import resolve_profile

STAGES = (
    "validate", "prepare", "train", "evaluate", "hessian", "landscape", "flatness", "collapse",
    "smoothness", "toy", "finetune", "finetune_eval", "report",
)  # fmt: skip


def pipeline_file(stage: str) -> Path:
    """Where a stage is declared: per-run stages in stages/<stage>/dvc.yaml (each
    with its own lock), the others in the top-level dvc.yaml."""
    own = REPO / "stages" / stage / "dvc.yaml"
    return own if own.is_file() else REPO / "dvc.yaml"


def imported_modules(stage: str) -> set[str]:
    """The advland source files a stage script imports, from a fresh interpreter."""
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('stage', 'stages/{stage}.py')\n"
        "spec.loader.exec_module(importlib.util.module_from_spec(spec))\n"
        "print('\\n'.join(m.__file__ for n, m in sys.modules.items() if n.split('.')[0] == 'advland'))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    return {str(Path(f).resolve().relative_to(REPO)) for f in done.stdout.split()}


def declared_code_deps(stage: str) -> set[str]:
    """The .py files (folders expanded) that dvc.yaml lists as the stage's deps."""
    stages = yaml.safe_load(pipeline_file(stage).read_text())["stages"]
    spec = stages[stage].get("do", stages[stage])
    files = set()
    for dep in spec["deps"]:
        path = REPO / dep
        if path.is_dir() and dep.startswith("src/"):
            files |= {str(p.relative_to(REPO)) for p in path.rglob("*.py")}
        elif dep.endswith(".py"):
            files.add(dep)
    return files


@pytest.mark.parametrize("stage", STAGES)
def test_each_stage_depends_on_exactly_the_modules_it_imports(stage):
    assert declared_code_deps(stage) == imported_modules(stage) | {f"stages/{stage}.py"}


LR_RUNS = {
    "mnist2-lr-l2-adv-0p5": {"dataset": "mnist2", "model": "lr", "norm": "l2", "noise": "adv",
                             "eps": 0.5},
    "mnist2-lr-linf-rand-8_255": {"dataset": "mnist2", "model": "lr", "norm": "linf",
                                  "noise": "rand", "eps": "8/255"},
}  # fmt: skip
NET_RUN = "fashion_mnist-resnet18-linf-adv-8_255"
PER_RUN = ("train", "evaluate", "hessian", "landscape", "flatness")


def mixed_params(tmp_path: Path) -> Path:
    """The tiny profile plus a ResNet run on Fashion-MNIST."""
    params = resolve_profile("tiny", REPO)
    smoke = resolve_profile("smoke", REPO)
    params["prepare"]["datasets"] = ["mnist2", "fashion_mnist"]
    params["runs"] = LR_RUNS | {
        NET_RUN: {"dataset": "fashion_mnist", "model": "resnet18", "norm": "linf",
                  "noise": "adv", "eps": "8/255"}
    }  # fmt: skip
    for section in ("train", "evaluate", "hessian", "landscape", "flatness"):
        params[section]["fashion_mnist"] = {"resnet18": smoke[section]["mnist"]["resnet18"]}
    params["attack"]["fashion_mnist"] = copy.deepcopy(smoke["attack"]["mnist"])
    params["attack"]["mnist2"]["linf"] = copy.deepcopy(smoke["attack"]["mnist"]["linf"])
    points = params["companion"]["linear"]["mnist2"]["smoothness"]["points"]
    for point, run in zip(points.values(), [*LR_RUNS, *LR_RUNS], strict=False):
        point["run"] = run
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def fake_outputs(repo: Path) -> None:
    """A placeholder for every output, so that `dvc commit` records a lock without
    running anything: what is tested is dvc.yaml's wiring, not the stages."""
    params = yaml.safe_load((repo / "params.yaml").read_text())
    files = ["data/params.ok"] + [
        f"data/prepared/{d}.{ext}" for d in params["prepare"]["datasets"] for ext in ("npz", "json")
    ]
    for run in params["runs"]:
        files += [f"models/{run}/seed0.pt", f"logs/train/{run}.csv"]
        files += [f"landscapes/{k}/{run}.csv" for k in ("1d", "2d", "eigen1d", "eigen2d")]
        files += [f"spectra/values/{run}.csv", f"spectra/vectors/{run}.pt"]
        files += [f"metrics/{s}/{run}.json" for s in PER_RUN]
    ft = params["finetune"]
    files += [f"models/{ft['source']}/seed0.pt", "metrics/finetune/eval.json"]
    files += [f"landscapes/finetune/{k}.csv" for k in ("1d", "2d")]
    for key in ft["attacks"]:
        files += [f"models/finetune/{key}/seed0.pt", f"metrics/finetune/{key}.json"]
    files += ["reports/report.md", "reports/report.html", "reports/figures/f.png"]
    files += ["reports/tables/runs.csv", "metrics/summary.json"]
    files += ["companion/toy.csv", "metrics/companion/toy.json"]
    for d in params["companion"]["linear"]:
        files += [f"{k}companion/{s}/{d}.{e}" for s in ("collapse", "smoothness")
                  for k, e in (("", "csv"), ("metrics/", "json"))]  # fmt: skip
    for f in files:
        (repo / f).parent.mkdir(parents=True, exist_ok=True)
        (repo / f).write_text(f"placeholder {f}\n")


def changed_stages(repo: Path) -> set[str]:
    return set(json.loads(dvc(repo, "status", "--json").stdout or "{}"))


def edit_yaml(repo: Path, edit) -> None:
    path = repo / "params.yaml"
    params = yaml.safe_load(path.read_text())
    edit(params)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def per_run(runs, *stages: str) -> set[str]:
    """DVC's names of the per-run stages, which live in stages/<stage>/dvc.yaml."""
    return {f"stages/{s}/dvc.yaml:{s}@{r}" for r in runs for s in stages}


@pytest.mark.slow
def test_dvc_status_reruns_exactly_what_a_change_touches(tmp_path):
    repo = make_repo(tmp_path, mixed_params(tmp_path))
    fake_outputs(repo)
    dvc(repo, "commit", "--force", "--quiet")
    assert changed_stages(repo) == set()
    original = (repo / "params.yaml").read_text()
    downstream = PER_RUN

    edit_yaml(repo, lambda p: p["train"]["fashion_mnist"]["resnet18"].__setitem__("epochs", 7))
    assert changed_stages(repo) == per_run([NET_RUN], *downstream) | {"validate", "report"}
    (repo / "params.yaml").write_text(original)

    edit_yaml(repo, lambda p: p["attack"]["fashion_mnist"]["linf"]["train"].__setitem__("steps", 9))
    assert changed_stages(repo) == per_run(
        [NET_RUN], "train", "evaluate", "hessian", "flatness"
    ) | {
        "validate",
        "report",
    }
    (repo / "params.yaml").write_text(original)

    edit_yaml(repo, lambda p: p["train"]["mnist2"]["lr"].__setitem__("epochs", 7))
    assert changed_stages(repo) == per_run(LR_RUNS, *downstream) | {"validate", "report"}
    (repo / "params.yaml").write_text(original)

    edit_yaml(repo, lambda p: p["finetune"]["attacks"]["pgd"]["attack"].update({"steps": 9}))
    assert changed_stages(repo) == {"validate", "finetune@pgd", "finetune_eval", "report"}
    (repo / "params.yaml").write_text(original)
    edit_yaml(repo, lambda p: p["finetune"].update({"n_test": 9}))
    assert changed_stages(repo) == {"validate", "finetune_eval", "report"}
    (repo / "params.yaml").write_text(original)

    for section, key in (
        ("evaluate", "n_train"),
        ("hessian", "n_samples"),
        ("landscape", "n_train"),
        ("flatness", "n_train"),
    ):
        edit_yaml(
            repo, lambda p, s=section, k=key: p[s]["fashion_mnist"]["resnet18"].update({k: 9})
        )
        assert changed_stages(repo) == per_run([NET_RUN], section) | {"validate", "report"}, section
        (repo / "params.yaml").write_text(original)
        edit_yaml(repo, lambda p, s=section, k=key: p[s]["mnist2"]["lr"].update({k: 9}))
        assert changed_stages(repo) == per_run(LR_RUNS, section) | {"validate", "report"}, section
        (repo / "params.yaml").write_text(original)

    (repo / "data/prepared/fashion_mnist.npz").write_text("other data\n")
    assert changed_stages(repo) == {"prepare@fashion_mnist", "report"} | per_run(
        [NET_RUN], *downstream
    )
    dvc(repo, "commit", "--force", "--quiet")

    users = {stage: imported_modules(stage) for stage in STAGES}
    runs = list(yaml.safe_load(original)["runs"])
    attacks = list(yaml.safe_load(original)["finetune"]["attacks"])
    for module in sorted(set().union(*users.values())):
        path = repo / module
        text = path.read_text()
        path.write_text(text + "\n\ndef _edited() -> None:\n    pass\n")
        assert changed_stages(repo) == stages_using(module, users, runs, attacks), module
        path.write_text(text)
    toy = stages_using("src/advland/studies/toy.py", users, runs, attacks)
    assert toy == {"validate", "toy", "report"}  # a study's settings: its stage, not all 190
    warm = repo / "src/advland/pipeline/warm.py"  # the launcher changes no result
    warm.write_text(warm.read_text() + "\n")
    assert changed_stages(repo) == set()


def stages_using(
    module: str, users: dict[str, set[str]], runs: list[str], attacks: list[str]
) -> set[str]:
    """The stage names (per dataset, run or attack) whose script imports `module`."""
    out = set()
    for stage, modules in users.items():
        if module not in modules:
            continue
        if stage in ("validate", "report", "toy", "finetune_eval"):
            out.add(stage)
        elif stage in ("collapse", "smoothness"):
            out.add(f"{stage}@mnist2")
        elif stage == "finetune":
            out |= {f"finetune@{a}" for a in attacks}
        elif stage == "prepare":
            out |= {"prepare@mnist2", "prepare@fashion_mnist"}
        else:
            out |= per_run(runs, stage)
    return out


REMEDY = "mnist2-lr-l2-adv-0p5-awp"
REMEDY_RUN = LR_RUNS["mnist2-lr-l2-adv-0p5"] | {"tag": "awp", "train": {"awp": {"gamma": 0.005}}}


@pytest.mark.slow
def test_a_run_with_train_overrides_reruns_exactly_its_stages(tmp_path):
    """A remedy run added by a params edit (as `dvc exp run -S '+runs={<id>: ...}'` does)
    adds exactly its five stages; changing its overrides reruns exactly those."""
    repo = make_repo(tmp_path, mixed_params(tmp_path))
    fake_outputs(repo)
    dvc(repo, "commit", "--force", "--quiet")
    edit_yaml(repo, lambda p: p["runs"].__setitem__(REMEDY, REMEDY_RUN))
    assert changed_stages(repo) == per_run([REMEDY], *PER_RUN) | {"validate", "report"}
    fake_outputs(repo)
    dvc(repo, "commit", "--force", "--quiet")
    assert changed_stages(repo) == set()
    for override in ({"awp": {"gamma": 0.01}}, {"select": {"best": False}}):
        edit_yaml(repo, lambda p, o=override: p["runs"][REMEDY].__setitem__("train", o))
        status = json.loads(dvc(repo, "status", "--json").stdout)
        assert set(status) == per_run([REMEDY], *PER_RUN) | {"validate", "report"}, override
        for stage in per_run([REMEDY], *PER_RUN):  # as a changed parameter, not a command
            (change,) = status[stage]
            assert change == {"changed deps": {"params.yaml": {f"runs.{REMEDY}": "modified"}}}
        dvc(repo, "commit", "--force", "--quiet")
