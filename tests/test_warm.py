"""The warm interpreter runs a script as `python script args` would: arguments, working
directory, environment, streams, exit codes, tracebacks, signals, and fresh code."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest


@pytest.fixture
def warm(tmp_path):
    """Runs `python -m advland.pipeline.warm` with a server of its own; stops it afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="warm-", dir="/tmp"))  # socket paths must be short
    env = {**os.environ, "ADVLAND_WARM_DIR": str(folder)}

    def run(*argv, cwd=tmp_path, extra=None, **kwargs):
        cmd = [sys.executable, "-m", "advland.pipeline.warm", *argv]
        return subprocess.run(cmd, cwd=cwd, env=env | (extra or {}), capture_output=True,
                              text=True, timeout=300, **kwargs)  # fmt: skip

    run.env, run.sockets = env, folder
    yield run
    for pid_file in folder.glob("*.pid"):
        os.kill(int(pid_file.read_text()), signal.SIGTERM)
    shutil.rmtree(folder, ignore_errors=True)


SCRIPT = """
import os, sys
import helper
print("argv", sys.argv[1:], "cwd", os.getcwd(), "X", os.environ.get("X"), helper.VALUE)
print("to stderr", file=sys.stderr)
if sys.argv[1] == "raise":
    raise ValueError("boom")
sys.exit(int(sys.argv[1]))
"""


def write_script(folder: Path, value: int) -> Path:
    (folder / "helper.py").write_text(f"VALUE = {value}\n")
    (folder / "script.py").write_text(SCRIPT)
    return folder / "script.py"


def test_runs_like_a_fresh_interpreter(warm, tmp_path):
    code = tmp_path / "code"
    code.mkdir()
    script = write_script(code, 1)
    first = warm(str(script), "3", extra={"X": "a"})
    assert first.returncode == 3, first.stderr
    assert first.stdout == f"argv ['3'] cwd {tmp_path} X a 1\n"
    assert first.stderr == "to stderr\n"
    write_script(code, 2)  # an edit is seen at once: the server never imports the code
    second = warm(str(script), "0", cwd=code, extra={"X": "b"})
    assert (second.returncode, second.stdout) == (0, f"argv ['0'] cwd {code} X b 2\n")
    failed = warm(str(script), "raise")
    assert failed.returncode == 1 and "ValueError: boom" in failed.stderr
    assert "Traceback" in failed.stderr
    assert len(list(warm.sockets.glob("*.sock"))) == 1  # one server for all three


def test_cold_fallback_gives_the_same_result(warm, tmp_path):
    script = write_script(tmp_path, 7)
    cold = warm(str(script), "4", extra={"X": "c", "ADVLAND_WARM": "0"})
    hot = warm(str(script), "4", extra={"X": "c"})
    assert (cold.returncode, cold.stdout, cold.stderr) == (hot.returncode, hot.stdout, hot.stderr)
    assert hot.returncode == 4 and len(list(warm.sockets.glob("*.sock"))) == 1


def test_signals_reach_the_script_and_a_killed_client_takes_it_down(warm, tmp_path):
    (tmp_path / "sleeper.py").write_text(
        "import os, sys, time\nopen(sys.argv[1], 'w').write(str(os.getpid()))\ntime.sleep(120)\n"
    )
    for sig, expected in ((signal.SIGTERM, -signal.SIGTERM), (signal.SIGKILL, None)):
        pid_file = tmp_path / f"pid-{sig}"
        cmd = [
            sys.executable,
            "-m",
            "advland.pipeline.warm",
            str(tmp_path / "sleeper.py"),
            str(pid_file),
        ]
        client = subprocess.Popen(cmd, cwd=tmp_path, env=warm.env)
        deadline = time.monotonic() + 120
        while not pid_file.exists() or not pid_file.read_text():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        child = int(pid_file.read_text())
        assert child != client.pid
        client.send_signal(sig)
        client.wait(timeout=30)
        if expected is not None:  # the script died of the signal, and the client says so
            assert client.returncode == expected
        deadline = time.monotonic() + 10
        while Path(f"/proc/{child}").exists() and "Z" not in status(child):
            assert time.monotonic() < deadline, f"script {child} outlived its client"
            time.sleep(0.05)


def status(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return "Z"
