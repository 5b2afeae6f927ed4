"""The DVC remote: the tiny pipeline built and pushed from one clone, pulled into a fresh
one, where `dvc repro` then runs nothing. The remote is the committed .dvc/config's
default, a folder beside the clone (docs/remote.md)."""

from __future__ import annotations

import configparser
import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import REPO
from test_pipeline import dvc, make_repo, profile_file

pytestmark = pytest.mark.slow
GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]


def test_default_remote_is_a_folder_beside_the_clone():
    config = configparser.ConfigParser()
    config.read(REPO / ".dvc" / "config")
    name = config["core"]["remote"]
    url = config[f"'remote \"{name}\"'"]["url"]
    assert (REPO / ".dvc" / url).resolve() == REPO.parent / "advland-remote"


def cached_outputs(repo: Path) -> dict[str, str]:
    """md5 of every file DVC keeps in its cache (git ignores them), by path."""
    listed = subprocess.run(
        ["git", "ls-files", "--others", "--ignored", "--exclude-standard"],
        cwd=repo, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    return {
        p: hashlib.md5((repo / p).read_bytes()).hexdigest()
        for p in listed
        if not p.startswith(".dvc/") and "__pycache__" not in p
    }


def test_push_then_pull_into_a_fresh_clone_runs_nothing(tmp_path, mnist_wheel):
    repo = make_repo(tmp_path, profile_file(tmp_path, "tiny"))
    shutil.copy(REPO / ".dvc" / "config", repo / ".dvc" / "config")  # the default remote
    dvc(repo, "repro")
    subprocess.run([*GIT, "add", "-A"], cwd=repo, check=True)
    subprocess.run([*GIT, "commit", "-qm", "results"], cwd=repo, check=True)
    dvc(repo, "push")
    assert any((tmp_path / "advland-remote").rglob("*")), "nothing was pushed"
    built = cached_outputs(repo)
    assert any(p.startswith("models/") for p in built)

    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(repo), str(clone)], check=True)
    assert not any((clone / p).exists() for p in built)  # git brings none of them
    dvc(clone, "pull")
    assert cached_outputs(clone) == built
    again = dvc(clone, "repro")
    assert "Running stage" not in again.stdout, again.stdout
    status = dvc(clone, "status")
    assert "up to date" in status.stdout, status.stdout
