"""The warm interpreter runs a script as `python script args` would: arguments, working
directory, environment, streams, exit codes, tracebacks, signals, and fresh code."""

from __future__ import annotations

import ast
import json
import os
import shutil
import signal
import socket
import struct
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
    for sig, expected in (
        (signal.SIGTERM, -signal.SIGTERM),
        (signal.SIGINT, 130),
        (signal.SIGKILL, None),
    ):
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
        if expected is not None:  # the script died of the signal (or KeyboardInterrupt)
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


def test_server_key_covers_what_numpy_reads_at_import(monkeypatch):
    from advland.pipeline.warm import server_key

    for name in ("OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "NUMEXPR_MAX_THREADS"):
        monkeypatch.delenv(name, raising=False)
        before = server_key()
        monkeypatch.setenv(name, "3")
        assert server_key() != before, name


def test_the_socket_folder_is_private(warm, tmp_path):
    script = write_script(tmp_path, 1)
    runtime = Path(tempfile.mkdtemp(prefix="xdg-", dir="/tmp"))
    env = {k: v for k, v in warm.env.items() if k != "ADVLAND_WARM_DIR"}
    try:  # the default folder is made private
        done = subprocess.run([sys.executable, "-m", "advland.pipeline.warm", str(script), "0"],
                              cwd=tmp_path, env=env | {"XDG_RUNTIME_DIR": str(runtime)},
                              capture_output=True, text=True, timeout=300)  # fmt: skip
        folder = runtime / "advland-warm"
        assert done.returncode == 0 and "in this process" not in done.stderr, done.stderr
        assert (folder.stat().st_mode & 0o777, len(list(folder.glob("*.sock")))) == (0o700, 1)
    finally:
        for pid_file in runtime.glob("*/*.pid"):
            os.kill(int(pid_file.read_text()), signal.SIGTERM)
        shutil.rmtree(runtime, ignore_errors=True)
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    refused = warm(str(script), "5", extra={"ADVLAND_WARM_DIR": str(shared)})
    assert refused.returncode == 5 and "mode 0700; running" in refused.stderr
    assert list(shared.iterdir()) == []  # neither a server nor a lock there


def test_the_script_gets_the_clients_umask(warm, tmp_path):
    (tmp_path / "umask.py").write_text("import os\nprint(oct(os.umask(0)))\n")
    assert warm("umask.py").stdout == "0o22\n"  # the server starts with the usual 022
    narrow = warm("umask.py", preexec_fn=lambda: os.umask(0o027))
    assert narrow.stdout == "0o27\n" and len(list(warm.sockets.glob("*.sock"))) == 1


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to connect as another user")
def test_the_server_refuses_another_user(warm, tmp_path):
    (tmp_path / "touch.py").write_text("open('touched', 'w').close()\n")
    warm(str(tmp_path / "touch.py"))  # start the server
    (tmp_path / "touched").unlink()
    (path,) = warm.sockets.glob("*.sock")
    warm.sockets.chmod(0o755)  # let the other user reach the socket, as a shared /tmp would
    path.chmod(0o777)
    request = json.dumps({"argv": ["touch.py"], "cwd": str(tmp_path), "env": {}, "umask": 0})
    child = os.fork()
    if child == 0:  # as nobody, send a request
        code = 2
        try:
            os.setgid(65534)
            os.setuid(65534)
            conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            conn.connect(str(path))
            payload = struct.pack("!i", len(request)) + request.encode()
            try:
                socket.send_fds(conn, [payload], [0, 1, 2])
                code = 0 if conn.recv(4) == b"" else 1
            except (BrokenPipeError, ConnectionResetError):  # closed before or after the request
                code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0  # the connection was closed, unanswered
    time.sleep(1)
    assert not (tmp_path / "touched").exists()


def test_the_server_forks_with_one_thread_and_no_cuda(warm, tmp_path):
    (tmp_path / "pools.py").write_text(
        "import numpy, torch\n"
        "print(torch.cuda.is_initialized())\n"
        "a = numpy.ones((400, 400))\n"
        "print((a @ a)[0, 0], float(torch.ones(400, 400).mm(torch.ones(400, 400))[0, 0]))\n"
    )
    done = warm("pools.py")
    assert done.stdout == "False\n400.0 400.0\n", done.stderr  # BLAS and OpenMP work
    assert "in this process" not in done.stderr
    (pid_file,) = warm.sockets.glob("*.pid")
    assert len(os.listdir(f"/proc/{int(pid_file.read_text())}/task")) == 1


def test_a_preload_that_starts_a_thread_stops_the_server(tmp_path):
    (tmp_path / "starts_a_thread.py").write_text(
        "import threading, time\nthreading.Thread(target=time.sleep, args=(60,), daemon=True).start()\n"
    )
    code = "import sys, advland.pipeline.warm as w; w.PRELOAD = (sys.argv[2],); w.serve(w.Path(sys.argv[1]))"
    folder = Path(tempfile.mkdtemp(prefix="warm-", dir="/tmp"))
    try:
        done = subprocess.run([sys.executable, "-c", code, str(folder / "s.sock"), "starts_a_thread"],
                              cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(tmp_path)},
                              capture_output=True, text=True, timeout=60)  # fmt: skip
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    assert done.returncode == 1 and "not safe to fork after the preload: 2 threads" in done.stderr


def imported(path: Path) -> list[str]:
    """The modules `path` imports, relative ones with their leading dots."""
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = "." * node.level + (node.module or "")
            names += [f"{base}.{alias.name}" for alias in node.names]
    return names


def test_the_launcher_and_the_library_never_import_each_other():
    launcher = Path(__file__).parents[1] / "src/advland/pipeline/warm.py"
    assert not [name for name in imported(launcher) if name.startswith(("advland", "."))]
    for path in launcher.parents[1].rglob("*.py"):
        if path != launcher:
            assert not [name for name in imported(path) if "warm" in name.split(".")], path
