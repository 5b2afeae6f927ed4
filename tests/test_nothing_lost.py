"""Issue 29, "Nothing lost": a refused, failed or interrupted stage keeps every output.

One tiny pipeline is built once per session (`built`); each case copies it, applies one
bad input or fault, runs `dvc repro` and checks three things: a non-zero exit, a message
naming the key or file, and every output that existed before is byte-identical after.
The last test builds the pipeline a second time and compares every output's bytes.
"""

from __future__ import annotations

import contextlib
import csv
import difflib
import hashlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import yaml
from conftest import REPO, MaliciousPickle
from test_pipeline import make_repo

from advland.pipeline.profiles import resolve_profile

pytestmark = pytest.mark.slow

RUN = "mnist2-lr-l2-adv-0p5"
SOURCE = "mnist2-lr-l2-adv-0"  # fine-tuning's source: a clean run
TRAIN = f"stages/train/dvc.yaml:train@{RUN}"
OUTPUTS = (
    "models",
    "logs",
    "metrics",
    "reports",
    "landscapes",
    "spectra",
    "data/prepared",
    "companion",
    "data/params.ok",
)
TIMEOUT_S = 600


# ---- shared helpers -------------------------------------------------------------------


def copy_repo(src: Path, dst: Path) -> Path:
    """A full copy of a built repo: git, DVC cache (.dvc/cache) and outputs."""
    shutil.copytree(src, dst, symlinks=True, ignore=shutil.ignore_patterns("tmp"))
    return dst


def hash_outputs(repo: Path) -> dict[str, str]:
    """sha256 of every file under the output folders, by path relative to the repo."""
    hashes = {}
    for name in OUTPUTS:
        top = repo / name
        files = [top] if top.is_file() else sorted(p for p in top.rglob("*") if p.is_file())
        for path in files:
            hashes[str(path.relative_to(repo))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return hashes


def changed(before: dict[str, str], after: dict[str, str]) -> list[str]:
    """The files of `before` that are gone or have other bytes in `after`."""
    return sorted(path for path, digest in before.items() if after.get(path) != digest)


def dvc_env(**extra: str) -> dict[str, str]:
    """This environment, with this venv's `python` first on PATH (stages run `python`)."""
    env = {**os.environ, **extra}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    return env


def dvc(repo: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    """`dvc args...` in repo; the caller checks the exit status."""
    return subprocess.run(
        [sys.executable, "-m", "dvc", *args],
        cwd=repo,
        env=dvc_env(**env),
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )


def spawn_dvc(repo: Path, *args: str, **env: str) -> subprocess.Popen:
    """`dvc args...` in the background, in a process group of its own."""
    return subprocess.Popen(
        [sys.executable, "-m", "dvc", *args],
        cwd=repo,
        env=dvc_env(**env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def processes_in(repo: Path) -> list[int]:
    """Pids (not this one) working in repo: cwd inside it, or its path on the command line.
    A warm stage is a fork of the warm server: its cmdline is the server's, its cwd the repo."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cwd = os.readlink(entry / "cwd")
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if cwd == str(repo) or cwd.startswith(f"{repo}/") or str(repo) in cmdline:
            found.append(int(entry.name))
    return found


def kill_all(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def load(repo: Path) -> dict:
    return yaml.safe_load((repo / "params.yaml").read_text())


def dump(repo: Path, params: dict) -> None:
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def edit(repo: Path, change: Callable[[dict], None]) -> None:
    params = load(repo)
    change(params)
    dump(repo, params)


def replace_file(path: Path, data: bytes) -> None:
    """A new file at path (a DVC-cached output may be a link into the cache: never edit it)."""
    path.unlink()
    path.write_bytes(data)


def slow_run(repo: Path, epochs: int = 200) -> None:
    """The LR runs retrain (new params), slowly, with a resume checkpoint every epoch
    (a run's own `train:` would need a tag, a new id: so the dataset's section)."""
    edit(repo, lambda p: p["train"]["mnist2"]["lr"].update(epochs=epochs, checkpoint_every=1))


def wait_for_training(repo: Path, proc: subprocess.Popen, timeout_s: float = 180) -> None:
    """Until RUN's train stage has written its first resume checkpoint."""
    resume = repo / "models" / ".resume"
    deadline = time.monotonic() + timeout_s
    while not (resume.is_dir() and any(p.is_file() for p in resume.rglob("*"))):
        assert proc.poll() is None, f"dvc ended before training: {proc.stdout.read()}"
        assert time.monotonic() < deadline, "training never wrote a resume checkpoint"
        time.sleep(0.1)
    time.sleep(0.5)


# ---- the built pipeline ---------------------------------------------------------------


def tiny_params(path: Path) -> Path:
    """The tiny profile cut down: 2 runs (one the fine-tuning source), 1 seed, no linear
    companion (its smoothness points name runs not listed here)."""
    params = resolve_profile("tiny", REPO)
    entry = {"dataset": "mnist2", "model": "lr", "norm": "l2", "noise": "adv"}
    params["seeds"] = [0]
    params["runs"] = {SOURCE: entry | {"eps": 0}, RUN: entry | {"eps": 0.5}}
    params["companion"]["linear"] = {}
    # smaller and faster than the profile (the build is most of this file's time)
    params["train"]["mnist2"]["lr"]["data"] = {"n_train": 1000}
    params["attack"]["mnist2"]["l2"] = {
        "train": {"steps": 10, "rel_step_size": 2.5},
        "eval": {"steps": 5, "rel_step_size": 2.5},
    }
    params["evaluate"]["mnist2"]["lr"] |= {"n_train": 200, "n_test": 200}
    params["hessian"]["mnist2"]["lr"] |= {
        "lanczos_iters": 20,
        "pyhessian": False,
        "trace_samples": 5,
        "n_samples": 200,
    }
    params["landscape"]["mnist2"]["lr"] |= {"n_train": 100, "n_test": 100}
    params["landscape"]["mnist2"]["lr"]["pgd"]["steps"] = 5
    params["finetune"]["attacks"] = {"fgsm": params["finetune"]["attacks"]["fgsm"]}
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def build(folder: Path) -> Path:
    """A git + DVC repo of the tiny pipeline, reproduced in full and committed."""
    folder.mkdir(parents=True, exist_ok=True)
    repo = make_repo(folder, tiny_params(folder / "params.yaml"))
    done = dvc(repo, "repro")
    assert done.returncode == 0, done.stdout + done.stderr
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "add", "-A"], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-qm", "built"], cwd=repo, check=True)
    return repo


@pytest.fixture(scope="session")
def built(tmp_path_factory, mnist_wheel) -> Path:
    return build(tmp_path_factory.mktemp("built"))


@pytest.fixture
def repo(built, tmp_path) -> Path:
    """A copy of the built pipeline for one case; no process is left working in it."""
    copy = copy_repo(built, tmp_path / "repo")
    yield copy
    kill_all(processes_in(copy))


# ---- refused before any stage: bad params ---------------------------------------------


def set_run(field: str, value) -> Callable[[Path], None]:
    return lambda repo: edit(repo, lambda p: p["runs"][RUN].update({field: value}))


def set_train(path: str, value) -> Callable[[Path], None]:
    def change(params: dict) -> None:
        section = params["train"]["mnist2"]["lr"]
        *parents, last = path.split(".")
        for key in parents:
            section = section[key]
        section[last] = value

    return lambda repo: edit(repo, change)


def set_top(key: str, value) -> Callable[[Path], None]:
    return lambda repo: edit(repo, lambda p: p.update({key: value}))


def eps_text(value: str) -> Callable[[Path], None]:
    """RUN's eps written by hand: YAML has no -0 integer, and nan/inf/1e999 read oddly."""

    def change(repo: Path) -> None:
        dump(repo, load(repo))  # one run per line below, in flow style
        text = (repo / "params.yaml").read_text()
        text = re.sub(rf"(\n  {RUN}:\n(    .*\n)*?    eps: )0\.5\n", rf"\g<1>{value}\n", text)
        assert f"eps: {value}\n" in text
        (repo / "params.yaml").write_text(text)

    return change


def duplicate_run(repo: Path) -> None:
    """RUN given twice in `runs`, the second with another eps."""
    text = (repo / "params.yaml").read_text()
    line = f"  {RUN}:\n"
    block = (
        line + "    dataset: mnist2\n    model: lr\n    norm: l2\n    noise: adv\n    eps: 0.7\n"
    )
    assert text.count(line) == 1
    (repo / "params.yaml").write_text(text.replace(line, block + line))


BAD_PARAMS = {
    "eps_abc": (set_run("eps", "abc"), "eps"),
    "eps_negative": (set_run("eps", -0.1), "eps"),
    "epochs_twenty": (set_train("epochs", "twenty"), "epochs"),
    "optimizer_lr_negative": (set_train("optimizer.lr", -1), "lr"),
    "seeds_empty": (set_top("seeds", []), "seeds"),
    "train_unknown_key": (set_train("foo", 1), "foo"),
    "run_key_not_its_fields": (set_run("eps", 0.7), RUN),
    "unknown_top_level_key": (set_top("foo", 1), "foo"),
    "runs_empty": (set_top("runs", {}), "runs"),
    "norm_l3": (set_run("norm", "l3"), "l3"),
    "dataset_mnist3": (set_run("dataset", "mnist3"), "mnist3"),
    "eps_8_over_0": (eps_text("8/0"), "eps"),
    "eps_minus_0": (eps_text("-0"), "eps"),
    "eps_nan": (eps_text("nan"), "eps"),
    "eps_inf": (eps_text("inf"), "eps"),
    "eps_1e999": (eps_text("1e999"), "eps"),
    "duplicate_run_key": (duplicate_run, RUN),
}


def check_refused(
    done: subprocess.CompletedProcess, needle: str, before: dict, after: dict
) -> None:
    """The three checks: non-zero exit, a message naming `needle`, no output changed."""
    said = done.stdout + done.stderr
    assert done.returncode != 0, said
    assert needle in said, said
    assert not changed(before, after), (changed(before, after), said)


@pytest.mark.parametrize("case", BAD_PARAMS)
def test_bad_param_keeps_every_output(repo, case):
    change, needle = BAD_PARAMS[case]
    before = hash_outputs(repo)
    change(repo)
    done = dvc(repo, "repro")
    check_refused(done, needle, before, hash_outputs(repo))
    if case != "duplicate_run_key":  # DVC's own YAML reader refuses that one, before any stage
        assert "Running stage 'validate'" in done.stdout, done.stdout  # refused by validate...
    assert not re.search(r"Running stage '(?!validate)", done.stdout)  # ...before any other


def test_unknown_key_stops_a_targeted_train_stage(repo):
    before = hash_outputs(repo)
    set_top("foo", 1)(repo)
    done = dvc(repo, "repro", TRAIN)
    check_refused(done, "foo", before, hash_outputs(repo))


def test_fixed_value_then_repro_succeeds(repo):
    """A bad value is refused; once fixed, the valid edit beside it runs, and only it."""
    before = hash_outputs(repo)

    def change(params: dict) -> None:
        params["runs"][RUN]["eps"] = "abc"
        params["companion"]["toy"]["points"] = 21

    edit(repo, change)
    check_refused(dvc(repo, "repro"), "eps", before, hash_outputs(repo))
    set_run("eps", 0.5)(repo)
    done = dvc(repo, "repro")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Running stage 'toy'" in done.stdout
    assert not re.search(r"Running stage '[^']*(train|evaluate|hessian|landscape)@", done.stdout)
    after = hash_outputs(repo)
    assert any(path.startswith("companion/toy") for path in changed(before, after))
    assert not [p for p in changed(before, after) if p.startswith(("models/", "spectra/"))]


def test_exp_run_with_a_bad_value(repo):
    """`dvc exp run -S` rewrites params.yaml before the stages run; validate refuses it."""
    before = hash_outputs(repo)
    text = (repo / "params.yaml").read_text()
    done = dvc(repo, "exp", "run", "-S", "train.mnist2.lr.optimizer.lr=-1")
    check_refused(done, "lr", before, hash_outputs(repo))
    # What DVC leaves in params.yaml: the bad value, written into the file (reported, not
    # required: DVC does it, not the project).
    rewritten = (repo / "params.yaml").read_text()
    lines = sum(1 for d in difflib.ndiff(text.splitlines(), rewritten.splitlines()) if d[0] in "+-")
    print(f"params.yaml: {lines} lines added or removed by dvc exp run")
    assert load(repo)["train"]["mnist2"]["lr"]["optimizer"]["lr"] == -1


# ---- a corrupt or malicious input: the stage that reads it fails ----------------------


def test_corrupt_prepared_dataset(repo):
    npz = repo / "data" / "prepared" / "mnist2.npz"
    replace_file(npz, npz.read_bytes()[:1000])
    before = hash_outputs(repo)
    done = dvc(repo, "repro", "--single-item", TRAIN)
    check_refused(done, "data/prepared/mnist2.npz", before, hash_outputs(repo))
    assert "Traceback" not in done.stderr, done.stderr


def test_corrupt_checkpoint(repo):
    ckpt = repo / "models" / RUN / "seed0.pt"
    replace_file(ckpt, ckpt.read_bytes()[:1000])
    before = hash_outputs(repo)
    done = dvc(repo, "repro", "--single-item", f"stages/evaluate/dvc.yaml:evaluate@{RUN}")
    check_refused(done, f"models/{RUN}/seed0.pt", before, hash_outputs(repo))
    assert "Traceback" not in done.stderr, done.stderr


@pytest.mark.parametrize(
    ("path", "stage"),
    [
        (f"models/{RUN}/seed0.pt", f"stages/evaluate/dvc.yaml:evaluate@{RUN}"),
        (f"spectra/vectors/{RUN}.pt", f"stages/landscape/dvc.yaml:landscape@{RUN}"),
    ],
    ids=["checkpoint", "eigenvectors"],
)
def test_malicious_pickle_is_refused(repo, path, stage):
    marker = repo.parent / "payload-ran"
    target = repo / path
    target.unlink()
    torch.save({"state_dict": MaliciousPickle(marker)}, target)  # a real torch zip, evil inside
    before = hash_outputs(repo)
    done = dvc(repo, "repro", "--single-item", stage)
    check_refused(done, path, before, hash_outputs(repo))
    assert not marker.exists(), "the pickle's code ran"
    assert "weights_only=False" not in done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr


# ---- outputs that cannot be written ---------------------------------------------------


def test_read_only_models_folder(repo):
    """models/ on a read-only file system: one line naming it, before any training."""
    before = hash_outputs(repo)
    slow_run(repo)  # RUN must train: no run-cache entry can restore it
    models = repo / "models"
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(models)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs: {mounted.stderr.decode().strip()}")
    try:
        start = time.monotonic()
        done = dvc(repo, "repro", TRAIN)
        seconds = time.monotonic() - start
    finally:
        subprocess.run(["umount", str(models)], check=True)
    check_refused(done, f"models/{RUN}", before, hash_outputs(repo))
    assert "Read-only file system" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert seconds < 60, f"{seconds:.0f} s: the stage trained before it failed"


# ---- interrupted: Ctrl-C and kill -9 --------------------------------------------------


def test_ctrl_c_during_train(repo):
    before = hash_outputs(repo)
    slow_run(repo)
    proc = spawn_dvc(repo, "repro", TRAIN)
    wait_for_training(repo, proc)
    os.killpg(proc.pid, signal.SIGINT)
    proc.wait(timeout=60)
    output = proc.stdout.read()
    assert proc.returncode != 0, output
    assert not changed(before, hash_outputs(repo)), output


@pytest.mark.parametrize("warm", ["1", "0"], ids=["warm", "cold"])
def test_kill_9_of_dvc_during_train(repo, warm):
    before = hash_outputs(repo)
    slow_run(repo)  # 200 epochs: still training when killed, on a fast machine too
    proc = spawn_dvc(repo, "repro", TRAIN, ADVLAND_WARM=warm)
    wait_for_training(repo, proc)
    os.kill(proc.pid, signal.SIGKILL)  # dvc alone, not its process group
    proc.wait(timeout=10)
    time.sleep(3)
    left = processes_in(repo)
    right_after = hash_outputs(repo)
    deadline = time.monotonic() + 300  # a surviving stage: until it ends (and writes)
    while processes_in(repo) and time.monotonic() < deadline:
        time.sleep(1)
    later = hash_outputs(repo)
    written = sorted(set(later.items()) ^ set(right_after.items()))
    assert not left and not written, f"processes left: {left}; written after: {written}"
    assert not changed(before, later)


# ---- byte-identical outputs for identical results (issue 29.4) -------------------------

# The only bytes allowed to differ between two builds from the same params are wall times:
# - JSON keys "seconds" and "*_seconds" in any .json under the output folders;
# - columns "seconds" and "*_seconds" of reports/tables/runs.csv;
# - the "Stage wall times" table of reports/report.md and reports/report.html.
WALL_TIME_KEY = re.compile(r"(^|_)seconds$")


def without_wall_times(path: Path) -> bytes:
    """The file's bytes with the wall-time fields above removed."""
    data = path.read_bytes()
    if path.suffix == ".json":
        return json.dumps(strip_keys(json.loads(data)), sort_keys=True).encode()
    if path.name == "runs.csv":
        rows = list(csv.reader(io.StringIO(data.decode())))
        keep = [i for i, name in enumerate(rows[0]) if not WALL_TIME_KEY.search(name)]
        return "\n".join(",".join(row[i] for i in keep) for row in rows).encode()
    if path.name in ("report.md", "report.html"):
        return strip_wall_time_table(data.decode()).encode()
    return data


def strip_keys(value):
    if isinstance(value, dict):
        return {k: strip_keys(v) for k, v in value.items() if not WALL_TIME_KEY.search(k)}
    if isinstance(value, list):
        return [strip_keys(v) for v in value]
    return value


def strip_wall_time_table(text: str) -> str:
    """The report without its "Stage wall times" heading, note and table (Markdown rows or
    the HTML <table>); the sections after it stay."""
    start = text.rindex("\n", 0, text.index("Stage wall times")) + 1
    if "<table>" in text[start:]:
        end = text.index("</table>", start) + len("</table>")
    else:
        lines = text[start:].split("\n")
        first = next(i for i, line in enumerate(lines) if line.startswith("|"))
        last = next(i for i in range(first, len(lines)) if not lines[i].startswith("|"))
        end = start + len("\n".join(lines[:last]))
    return text[:start] + text[end:]


def test_two_builds_have_the_same_bytes(built, tmp_path):
    other = build(tmp_path / "again")
    first, second = hash_outputs(built), hash_outputs(other)
    assert sorted(first) == sorted(second)
    differ = changed(first, second)
    print("differ in wall times only:", *differ, sep="\n  ")
    real = [p for p in differ if without_wall_times(built / p) != without_wall_times(other / p)]
    assert not real, real
