"""Run stage scripts in a warm interpreter, so that a stage does not pay for `import torch`.

    python -m advland.pipeline.warm stages/train.py ARGS...     # what dvc.yaml runs

A stage is a fresh process, and importing torch and the rest takes seconds, more than
most stages' own work. This client asks a server that has imported those libraries
once to fork: the child takes the client's working directory, environment, arguments
and standard streams, runs the script as `__main__` (as `python script ARGS` would),
and sends back its exit code.

- The server never imports advland: every stage sees the code as it is on disk.
- A server serves one interpreter, package set and threading environment (SERVER_ENV);
  other combinations get their own. It starts on first use, in the background, and
  exits after IDLE_S seconds without work.
- Signals to the client go to the child; if the client dies (kill -9), so does the child.
- With ADVLAND_WARM=0, or where the server cannot start, the script runs in this
  process instead. Nothing runs twice: once a server has the request, the client
  only reports.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import runpy
import signal
import socket
import struct
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import traceback
from pathlib import Path

IDLE_S = 600
START_TIMEOUT_S = 120
PRELOAD = (
    "torch",
    "torch._dynamo",  # the first optimizer step imports it: 1-2 s
    "torch.func",
    "numpy",
    "pandas",
    "scipy.stats",
    "tqdm",
    "pydantic",
    "yaml",
)
SERVER_ENV = ("OMP_", "MKL_", "KMP_", "CUDA_", "TORCH", "PYTORCH", "LD_", "PYTHON")
INT = struct.Struct("!i")


class Unavailable(Exception):
    """No server could be reached or started; the script may still run cold."""


def server_key() -> str:
    """What a server's imports depend on: interpreter, installed packages, environment."""
    site = Path(sysconfig.get_paths()["purelib"])
    env = sorted((k, v) for k, v in os.environ.items() if k.startswith(SERVER_ENV))
    text = json.dumps([sys.executable, sys.prefix, site.stat().st_mtime_ns, env])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def socket_path() -> Path:
    folder = Path(os.environ.get("ADVLAND_WARM_DIR", tempfile.gettempdir()))
    return folder / f"advland-warm-{os.getuid()}-{server_key()}.sock"


# ---- client ---------------------------------------------------------------------------


def connect(path: Path) -> socket.socket:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(str(path))
    except OSError:
        conn.close()
        raise
    return conn


def connect_or_start(path: Path) -> socket.socket:
    """A connection to the server at `path`, starting it first if none answers."""
    with contextlib.suppress(OSError):
        return connect(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{path}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one starter at a time; the others wait here
        with contextlib.suppress(OSError):
            return connect(path)
        with open(f"{path}.log", "ab") as log:
            server = subprocess.Popen(
                [sys.executable, "-m", "advland.pipeline.warm", "--serve", str(path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline and server.poll() is None:
            with contextlib.suppress(OSError):
                return connect(path)
            time.sleep(0.05)
    raise Unavailable(f"the server for {path} did not start (see {path}.log)")


def recv_exactly(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise ConnectionError("connection closed")
        data += chunk
    return data


def run_warm(argv: list[str]) -> int:
    """Run `python argv...` in a child of the server; returns its exit code."""
    try:
        conn = connect_or_start(socket_path())
        request = json.dumps({"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ)})
        payload = INT.pack(len(request)) + request.encode()
        sent = socket.send_fds(conn, [payload], [0, 1, 2])
        conn.sendall(payload[sent:])
        (pid,) = INT.unpack(recv_exactly(conn, INT.size))
    except (OSError, ConnectionError) as err:
        raise Unavailable(f"server did not take the request ({err})") from None
    forwarded = []

    def forward(sig, _frame):
        forwarded.append(sig)
        os.kill(pid, sig)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, forward)
    try:
        (code,) = INT.unpack(recv_exactly(conn, INT.size))
    except ConnectionError:  # the script died without reporting: of a signal, most likely
        if forwarded:  # die of it too, as the script did
            signal.signal(forwarded[-1], signal.SIG_DFL)
            os.kill(os.getpid(), forwarded[-1])
        print(f"advland.pipeline.warm: {argv[0]} ended without an exit code", file=sys.stderr)
        return 1
    return code


def run_cold(argv: list[str]) -> None:
    """Run the script in this process, as `python argv...` would."""
    sys.argv = list(argv)
    sys.path[0] = str(Path(argv[0]).resolve().parent)
    runpy.run_path(argv[0], run_name="__main__")


# ---- server ---------------------------------------------------------------------------


def serve(path: Path) -> None:
    """Import PRELOAD, then fork a child per request until IDLE_S seconds pass idle."""
    for name in PRELOAD:
        __import__(name)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    staging = Path(f"{path}.{os.getpid()}")
    listener.bind(str(staging))
    listener.listen(64)
    os.replace(staging, path)  # clients see the socket only once it listens
    inode = path.stat().st_ino
    Path(f"{path}.pid").write_text(f"{os.getpid()}\n")
    listener.settimeout(IDLE_S)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
    try:
        while True:
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                break
            if os.fork() == 0:
                listener.close()
                run_child(conn)
            conn.close()
    finally:
        with contextlib.suppress(OSError):
            if path.stat().st_ino == inode:
                path.unlink()


def run_child(conn: socket.socket) -> None:
    """In the forked child: become the client's process, run the script, report, exit."""
    code = 1
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        conn.settimeout(None)
        message, fds, _, _ = socket.recv_fds(conn, 1 << 16, 3)
        (size,) = INT.unpack(message[: INT.size])
        body = message[INT.size :]
        body += recv_exactly(conn, size - len(body))
        request = json.loads(body)
        conn.sendall(INT.pack(os.getpid()))
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        sys.stdin = open(0, closefd=False)  # noqa: SIM115 (the streams live as long as we do)
        sys.stdout = open(1, "w", buffering=1 if os.isatty(1) else -1, closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        threading.Thread(target=die_with_client, args=(conn,), daemon=True).start()
        try:
            run_cold(request["argv"])
            code = 0
        except SystemExit as done:
            code = exit_code(done.code)
        except KeyboardInterrupt:
            traceback.print_exc()
            code = 130
        except BaseException:
            traceback.print_exc()
            code = 1
        sys.stdout.flush()
        sys.stderr.flush()
        conn.sendall(INT.pack(code))
    finally:
        os._exit(code)


def exit_code(code) -> int:
    """What the interpreter would exit with for SystemExit(code)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def die_with_client(conn: socket.socket) -> None:
    """Block until the client's end closes; if the script is still running, end it."""
    with contextlib.suppress(OSError):
        while conn.recv(1):
            pass
    os.kill(os.getpid(), signal.SIGKILL)


def main(argv: list[str]) -> None:
    if argv[:1] == ["--serve"]:
        serve(Path(argv[1]))
        return
    if not argv:
        sys.exit("usage: python -m advland.pipeline.warm SCRIPT [ARGS...]")
    if os.environ.get("ADVLAND_WARM", "1") != "0" and hasattr(os, "fork"):
        try:
            sys.exit(run_warm(argv))
        except Unavailable as err:
            print(
                f"advland.pipeline.warm: {err}; running {argv[0]} in this process", file=sys.stderr
            )
    run_cold(argv)


if __name__ == "__main__":
    main(sys.argv[1:])
