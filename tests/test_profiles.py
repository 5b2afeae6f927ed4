"""Profiles as overlays of params.yaml: each resolves to valid params, `advland profile`
gives the same file whatever was applied before, and a bad profile changes nothing."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import REPO

from advland.core.config import load_params, parse_params
from advland.core.errors import ParamsError
from advland.pipeline.cli import main
from advland.pipeline.profiles import (
    DELETE,
    HEADER,
    Replace,
    apply_profile,
    overlay,
    resolve_profile,
)

PROFILES = sorted(p.stem for p in (REPO / "profiles").glob("*.yaml"))
GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "init.defaultBranch=main"]


@pytest.mark.parametrize("name", PROFILES)
def test_every_profile_resolves_to_valid_params(name):
    params = parse_params(resolve_profile(name, REPO), source=name)
    assert params.runs
    assert resolve_profile(name, REPO) != yaml.safe_load((REPO / "params.yaml").read_text())


def test_the_six_profiles_are_there():
    assert PROFILES == ["cpu-deep", "cpu-deep-remedies", "offline", "paper", "smoke", "tiny"]


def test_overlay_merges_replaces_and_deletes():
    base = {"a": {"x": 1, "y": {"p": 1}}, "b": [1, 2], "c": {"k": 1}, "d": 4}
    over = {"a": {"y": {"q": 2}, "z": 3}, "b": [3], "c": Replace({"j": 2}), "d": DELETE}
    assert overlay(base, over) == {"a": {"x": 1, "y": {"p": 1, "q": 2}, "z": 3}, "b": [3],
                                   "c": {"j": 2}}  # fmt: skip
    assert base["a"] == {"x": 1, "y": {"p": 1}}  # the base is not modified


def test_delete_of_a_missing_key_names_it():
    with pytest.raises(ParamsError, match=r"^a\.nope: !delete, but the default has no such key"):
        overlay({"a": {"x": 1}}, {"a": {"nope": DELETE}})


@pytest.fixture
def repo(tmp_path, monkeypatch) -> Path:
    """A git repo with this project's committed params.yaml and its profiles."""
    (tmp_path / "params.yaml").write_bytes(
        subprocess.run(["git", "-C", str(REPO), "show", "HEAD:./params.yaml"],
                       capture_output=True, check=True).stdout
    )  # fmt: skip
    shutil.copytree(REPO / "profiles", tmp_path / "profiles")
    subprocess.run([*GIT, "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([*GIT, "add", "-A"], cwd=tmp_path, check=True)
    subprocess.run([*GIT, "commit", "-qm", "default"], cwd=tmp_path, check=True)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_apply_writes_the_resolved_profile(repo):
    default = (repo / "params.yaml").read_bytes()
    assert main(["profile", "tiny"]) == 0
    text = (repo / "params.yaml").read_text()
    assert text.encode() != default and text.startswith(f"{HEADER} tiny`")
    assert yaml.safe_load(text) == resolve_profile("tiny", repo)
    assert load_params(repo / "params.yaml").seeds == [0, 1]


def test_apply_gives_the_same_file_whatever_came_before(repo):
    apply_profile("tiny", repo)
    tiny = (repo / "params.yaml").read_bytes()
    apply_profile("tiny", repo)
    assert (repo / "params.yaml").read_bytes() == tiny
    for before in PROFILES:
        apply_profile(before, repo)
        apply_profile("tiny", repo)
        assert (repo / "params.yaml").read_bytes() == tiny, before


@pytest.mark.parametrize(
    "overlay_text, expected",
    [
        ("trian: {mnist2: {lr: {epochs: 2}}}\n", "trian"),
        ("train: {mnist2: {lr: {epochs: many}}}\n", "train.mnist2.lr.epochs"),
        ("train: {mnist2: {lr: {hardwre: !delete }}}\n", "train.mnist2.lr.hardwre"),
        ("seeds: [0\n", "profiles/bad.yaml"),
    ],
)
def test_a_bad_profile_is_one_line_and_leaves_params_unchanged(repo, capsys, overlay_text,
                                                               expected):  # fmt: skip
    apply_profile("smoke", repo)
    before = (repo / "params.yaml").read_bytes()
    (repo / "profiles" / "bad.yaml").write_text(overlay_text)
    assert main(["profile", "bad"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: profiles/bad.yaml") and expected in err
    assert (repo / "params.yaml").read_bytes() == before
    assert sorted(p.name for p in repo.iterdir()) == [".git", "params.yaml", "profiles"]


def test_an_unknown_profile_lists_the_known_ones(repo, capsys):
    assert main(["profile", "tinny"]) == 2
    assert "profiles: cpu-deep, cpu-deep-remedies, offline, paper, smoke, tiny" in (
        capsys.readouterr().err
    )


def test_a_committed_profile_is_not_taken_for_the_default(repo):
    apply_profile("tiny", repo)
    subprocess.run([*GIT, "commit", "-qam", "tiny"], cwd=repo, check=True)
    with pytest.raises(ParamsError, match="written by `advland profile`"):
        apply_profile("smoke", repo)
