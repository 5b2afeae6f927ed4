"""A stage dies with the process that launched it. After kill -9 of that process alone (as
of `dvc repro`, which runs the stage's command through `$SHELL -c`), no process of the
stage is left and its output is never written: warm and cold, through a shell that execs
the command (bash) and through one that forks it (dash, Debian's /bin/sh)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
SLEEP_S = 8  # the fake stage's work: long enough to be killed during it

STAGE = f"""
import os, subprocess, sys, time
helper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
open(sys.argv[1] + ".tmp", "w").write(f"{{os.getpid()}} {{helper.pid}}")
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
time.sleep({SLEEP_S})
open(sys.argv[2], "w").write("written after the work")
"""
# What DVC does: run the command through a shell, with DVC_STAGE set, and wait.
LAUNCHER = """
import os, subprocess, sys
env = {**os.environ, "DVC_STAGE": "fake"}
subprocess.Popen([sys.argv[1], "-c", sys.argv[2]], env=env).wait()
"""


@pytest.fixture(scope="module")
def sockets():
    folder = Path(tempfile.mkdtemp(prefix="warm-", dir="/tmp"))  # socket paths must be short
    yield folder
    for pid_file in folder.glob("*.pid"):
        os.kill(int(pid_file.read_text()), signal.SIGTERM)
    shutil.rmtree(folder, ignore_errors=True)


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def processes() -> list[tuple[int, bytes, str]]:
    """(pid, command line, working directory) of each live process but this one."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and entry.name != str(os.getpid()) and alive(int(entry.name)):
            with contextlib.suppress(OSError):
                found.append(
                    (int(entry.name), (entry / "cmdline").read_bytes(), os.readlink(entry / "cwd"))
                )
    return found


def running(marker: str) -> list[int]:
    """Live processes whose command line holds `marker`."""
    return [pid for pid, cmdline, _ in processes() if marker.encode() in cmdline]


@pytest.mark.parametrize("shell", ["/bin/bash", "/bin/sh"])
@pytest.mark.parametrize("path", ["warm", "cold"])
def test_kill_9_of_the_launcher_ends_the_stage(tmp_path, sockets, shell, path):
    script, started, output = tmp_path / "stage.py", tmp_path / "started", tmp_path / "output"
    script.write_text(STAGE)
    env = {**os.environ, "ADVLAND_WARM_DIR": str(sockets)}
    env["ADVLAND_WARM"] = "1" if path == "warm" else "0"
    cmd = f"{sys.executable} -m advland.pipeline.warm {script} {started} {output}"
    launcher = subprocess.Popen([sys.executable, "-c", LAUNCHER, shell, cmd], env=env)
    deadline = time.monotonic() + 180
    while not started.exists():
        assert time.monotonic() < deadline and launcher.poll() is None
        time.sleep(0.05)
    t0 = time.monotonic()
    stage, helper = map(int, started.read_text().split())
    clients = running(str(script))  # the client, and the shell where it forks
    assert clients and (stage in clients) == (path == "cold")
    launcher.kill()
    launcher.wait()
    deadline = time.monotonic() + 5
    while alive(stage) or running(str(script)):
        assert time.monotonic() < deadline, f"the stage outlived its launcher ({path}, {shell})"
        time.sleep(0.05)
    if path == "warm":  # the stage's process group goes with it
        assert not alive(helper)
    else:
        os.kill(helper, signal.SIGKILL)  # a cold stage's own children are its business
    time.sleep(max(0.0, SLEEP_S + 2 - (time.monotonic() - t0)))
    assert not output.exists()


def stage_processes(repo: Path, marker: bytes = b"") -> list[int]:
    """Live processes working in `repo` whose command line holds `marker`, warm servers aside."""
    return [
        pid
        for pid, cmdline, cwd in processes()
        if cwd == str(repo) and marker in cmdline and b"--serve" not in cmdline
    ]


def snapshot(repo: Path) -> dict[str, tuple[int, int]]:
    files = (p for p in repo.rglob("*") if p.is_file() and ".git" not in p.parts)
    return {str(p.relative_to(repo)): (p.stat().st_size, p.stat().st_mtime_ns) for p in files}


def test_kill_9_of_dvc_repro_ends_the_train_stage(tmp_path, mnist_wheel):
    from test_hardening import TRAIN, tiny_params
    from test_pipeline import dvc, make_repo

    params = tiny_params(tmp_path, epochs=60, checkpoint_every=1, data={"n_train": 4000})
    repo = make_repo(tmp_path, params).resolve()
    dvc(repo, "repro", "prepare@mnist2")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    repro = subprocess.Popen([sys.executable, "-m", "dvc", "repro", TRAIN], cwd=repo, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 180
    while not stage_processes(repo, b"stages/train.py"):  # the stage has started
        assert time.monotonic() < deadline and repro.poll() is None
        time.sleep(0.05)
    time.sleep(2)
    assert stage_processes(repo, b"stages/train.py"), "the stage ended before the kill"
    repro.kill()  # dvc alone, not its process group
    repro.wait()
    deadline = time.monotonic() + 5
    while stage_processes(repo):
        assert time.monotonic() < deadline, "the stage outlived dvc repro"
        time.sleep(0.05)
    before = snapshot(repo)
    time.sleep(15)  # a survivor would have written a checkpoint by now
    assert snapshot(repo) == before
