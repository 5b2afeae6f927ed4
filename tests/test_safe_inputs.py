"""Nothing read can run code or crash with a traceback, and nothing written depends on
chance: one safe `.pt` loader, byte-identical checkpoints, safe eps and YAML parsing,
and one-line errors for outputs that cannot be written (read-only, full)."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import subprocess
from pathlib import Path

import pytest
import torch
import yaml
from conftest import REPO, MaliciousPickle

from advland.core.config import load_params, parse_run
from advland.core.errors import CheckpointError, OutputError, ParamsError
from advland.core.io import (
    atomic_dir,
    atomic_outputs,
    check_writable,
    load_checkpoint,
    save_checkpoint,
    write_json,
)
from advland.measure.landscape import load_eigenvectors
from advland.pipeline.cli import main

LOADERS = {"checkpoint": load_checkpoint, "eigenvectors": load_eigenvectors}
BAD_EPS = ["8/0", "-0", "-0.0", "nan", "inf", "1e999", "abc", ".nan", "-.inf", "8/-255"]


def one_line(err: Exception) -> str:
    text = str(err)
    assert "\n" not in text and "Traceback" not in text, text
    return text


# -- one safe loader -----------------------------------------------------------


@pytest.mark.parametrize("kind", LOADERS)
def test_malicious_pickle_is_refused_and_never_run(tmp_path, kind):
    marker, path = tmp_path / "pwned", tmp_path / f"{kind}.pt"
    torch.save({"state_dict": {}, 0: torch.zeros(2), "x": MaliciousPickle(marker)}, path)
    with pytest.raises(CheckpointError) as caught:
        LOADERS[kind](path)
    message = one_line(caught.value)
    assert message.startswith(f"{path}: corrupt or unsafe") and "posix.system" in message
    assert "weights_only" not in message
    assert not marker.exists()


@pytest.mark.parametrize("kind", LOADERS)
@pytest.mark.parametrize(
    "damage, expected",
    [
        (lambda p: p.unlink(), "not found"),
        (lambda p: p.write_bytes(p.read_bytes()[:200]), "truncated or not a zip archive"),
        (lambda p: p.write_bytes(b"PK\x03\x04 not a checkpoint"), "not a zip archive"),
        (lambda p: p.write_text("hello"), "not a zip archive"),
        (lambda p: (p.unlink(), p.mkdir()), "not found"),
        (lambda p: torch.save([1, 2], p), "expected|no state_dict"),
    ],
)
def test_damaged_pt_files_give_one_line_naming_the_file(tmp_path, kind, damage, expected):
    path = tmp_path / "x.pt"
    save_checkpoint(path, {"state_dict": {"w": torch.ones(3)}, 0: torch.ones(2, 3)})
    damage(path)
    with pytest.raises(CheckpointError, match=expected) as caught:
        LOADERS[kind](path)
    assert one_line(caught.value).startswith(f"{path}: ")


def test_only_core_io_calls_torch_load():
    tracked = subprocess.run(
        ["git", "ls-files", "src", "stages", "benchmarks"],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    callers = [
        Path(path) for path in tracked
        if path.endswith(".py") and "torch.load(" in (REPO / path).read_text()
    ]  # fmt: skip
    assert callers == [Path("src/advland/core/io.py")]


# -- byte-identical outputs --------------------------------------------------------


def test_the_same_checkpoint_has_the_same_bytes_at_any_path(tmp_path):
    payload = {"state_dict": {"w": torch.arange(6.0).reshape(2, 3)}, "epoch": 3, "name": "x"}
    paths = [tmp_path / "a" / "seed0.pt", tmp_path / "b" / "other.pt"]
    for path in paths:
        save_checkpoint(path, payload)
    digests = {hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}
    assert len(digests) == 1
    assert torch.equal(load_checkpoint(paths[1])["state_dict"]["w"], payload["state_dict"]["w"])


# -- every parse is safe -------------------------------------------------------------


@pytest.mark.parametrize("eps", BAD_EPS)
def test_bad_eps_in_a_run_names_the_key_and_what_is_allowed(eps):
    with pytest.raises(ParamsError) as caught:
        parse_run({"dataset": "mnist2", "model": "lr", "norm": "l2", "noise": "adv", "eps": eps})
    message = one_line(caught.value)
    assert message.startswith("eps: ") and f"(got {eps!r})" in message
    assert ">= 0 without a sign" in message


@pytest.mark.parametrize("eps", BAD_EPS)
def test_bad_eps_in_params_yaml_is_refused(tmp_path, eps):
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["runs"]["mnist2-lr-l2-adv-0"] = {
        "dataset": "mnist2", "model": "lr", "norm": "l2", "noise": "adv", "eps": "EPS"
    }  # fmt: skip
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False).replace("eps: EPS", f"eps: {eps}"))
    with pytest.raises(ParamsError) as caught:
        load_params(path)
    lines = [line for line in str(caught.value).splitlines() if "runs.mnist2-lr-l2-adv-0" in line]
    assert len(lines) == 1 and ".eps: " in lines[0] and ">= 0 without a sign" in lines[0]


@pytest.mark.parametrize("eps", BAD_EPS)
def test_bad_eps_in_advland_runs_exits_2(capsys, eps):
    assert main(["runs", "mnist2", "lr", "l2", "adv", f"0.2,{eps}"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("error: eps: ") and f"(got {eps!r})" in err
    assert len(err.strip().splitlines()) == 1


def test_advland_runs_refuses_a_grid_that_makes_an_id_twice(capsys):
    assert main(["runs", "mnist2", "lr", "l2", "adv", "0.2,0.20"]) == 2
    assert "the grid makes the run id 'mnist2-lr-l2-adv-0p2' twice" in capsys.readouterr().err
    assert main(["runs", "mnist2", "lr", "l2", "adv", "0,0.2,8/255"]) == 0


@pytest.mark.parametrize(
    "text, key, line",
    [
        ("seeds: [0]\nseeds: [1]\n", "seeds", 2),
        ("runs:\n  a: {eps: 1}\n  b: {eps: 2}\n  a: {eps: 3}\n", "a", 4),
        ("train: {mnist2: {lr: {epochs: 1, epochs: 2}}}\n", "epochs", 1),
    ],
)
def test_duplicate_keys_in_params_are_refused(tmp_path, text, key, line):
    path = tmp_path / "params.yaml"
    path.write_text(text)
    with pytest.raises(ParamsError) as caught:
        load_params(path)
    message = one_line(caught.value)
    assert message.startswith(f"{path}: ") and f"line {line}," in message
    assert f"duplicate key {key!r}" in message


def test_a_merge_key_may_still_be_overridden(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("base: &b {x: 1, y: 2}\nover:\n  <<: *b\n  x: 5\n")
    with pytest.raises(ParamsError, match="over: Extra inputs") as caught:
        load_params(path)  # not a duplicate key: the schema's own error
    assert "duplicate" not in str(caught.value)


# -- outputs that cannot be written ----------------------------------------------


@contextlib.contextmanager
def mounted(folder: Path, options: str):
    """A tmpfs mounted on `folder` with `options` (root only; skips elsewhere)."""
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    cmd = ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)]
    if subprocess.run(cmd, capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_check_writable_refuses_a_read_only_folder(tmp_path):
    with mounted(tmp_path / "models", "ro,size=1m"):
        with pytest.raises(OutputError) as caught:
            check_writable([tmp_path / "metrics" / "x.json", tmp_path / "models" / "run"])
        assert (
            one_line(caught.value) == f"{tmp_path}/models/run: cannot write (Read-only file system)"
        )
    assert not (tmp_path / "metrics").exists()  # checked at tmp_path, nothing made


def test_a_full_disk_is_one_line_naming_the_checkpoint(tmp_path):
    with mounted(tmp_path / "models", "size=64k"):
        path = tmp_path / "models" / "run" / "seed0.pt"
        check_writable([path])  # an empty file still fits
        with pytest.raises(OutputError) as caught:
            save_checkpoint(path, {"state_dict": {"w": torch.zeros(100_000)}})
        assert one_line(caught.value) == f"{path}: cannot write (No space left on device)"
        assert list(path.parent.iterdir()) == []


def fail_with(code: int):
    def fail(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    return fail


@pytest.mark.parametrize("code", [errno.EROFS, errno.EACCES, errno.ENOSPC])
def test_check_writable_really_creates_a_file(tmp_path, monkeypatch, code):
    monkeypatch.setattr(os, "open", fail_with(code))
    with pytest.raises(OutputError, match=f"out/x.csv: cannot write \\({os.strerror(code)}\\)"):
        check_writable([tmp_path / "out" / "x.csv"])


def test_a_failed_write_keeps_the_old_output_and_names_it(tmp_path, monkeypatch):
    path = tmp_path / "m.json"
    write_json(path, {"old": 1})
    monkeypatch.setattr(Path, "write_text", fail_with(errno.ENOSPC))
    with pytest.raises(OutputError) as caught:
        write_json(path, {"new": 2})
    assert one_line(caught.value) == f"{path}: cannot write (No space left on device)"
    assert path.read_text() == '{\n  "old": 1\n}\n' and os.listdir(tmp_path) == ["m.json"]


def test_a_read_only_rename_names_the_output(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "replace", fail_with(errno.EROFS))
    outputs = atomic_outputs(tmp_path / "a.csv", tmp_path / "b.csv")
    with pytest.raises(OutputError) as caught, outputs as tmps:
        for tmp in tmps:
            tmp.write_text("x\n")
    assert one_line(caught.value) == f"{tmp_path}/a.csv: cannot write (Read-only file system)"
    assert os.listdir(tmp_path) == []


def test_an_input_the_body_cannot_read_keeps_its_own_error(tmp_path):
    unreadable = OSError(errno.EACCES, "Permission denied", str(tmp_path / "data.npz"))
    with pytest.raises(PermissionError), atomic_outputs(tmp_path / "out.csv"):
        raise unreadable


def test_a_checkpoint_in_a_model_folder_is_named_at_its_final_place(tmp_path, monkeypatch):
    model_dir = tmp_path / "models" / "run"
    monkeypatch.setattr(Path, "write_bytes", fail_with(errno.EDQUOT))
    with pytest.raises(OutputError) as caught, atomic_dir(model_dir) as staging:
        save_checkpoint(staging / "seed0.pt", {"state_dict": {}})
    assert one_line(caught.value) == f"{model_dir}/seed0.pt: cannot write (Disk quota exceeded)"
    assert os.listdir(tmp_path / "models") == []
