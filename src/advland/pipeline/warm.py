"""Run stage scripts in a warm interpreter, so that a stage does not pay for `import torch`.

    python -m advland.pipeline.warm stages/train.py ARGS...     # what dvc.yaml runs

A stage is a fresh process, and importing torch and the rest takes seconds, more than
most stages' own work. This client asks a server that has imported those libraries
once to fork: the child takes the client's working directory, environment, arguments
and standard streams, runs the script as `__main__` (as `python script ARGS` would),
and sends back its exit code.

- The server never imports advland: every stage sees the code as it is on disk.
- A server serves one interpreter, package set and threading environment (SERVER_ENV)
  and set of resource limits; other combinations get their own. It starts on first use, in the background, and
  exits after IDLE_S seconds without work.
- The client dies with the process that launched it, even of kill -9: with its parent
  (PR_SET_PDEATHSIG), or under DVC, which sets DVC_STAGE for its command, with DVC even
  where a shell between them forks rather than execs (dash does). Signals to the client
  go to the child's process group; when the client dies, that group is killed.
- The server's socket sits in a folder only its user can enter (ADVLAND_WARM_DIR, else
  $XDG_RUNTIME_DIR/advland-warm, else /tmp/advland-warm-<uid>), and each end checks that
  the other runs as the same user (SO_PEERCRED). The child takes the client's umask.
- With ADVLAND_WARM=0, off Linux, or where no server can serve, the script runs in this
  process instead. Nothing runs twice: once a server has the request, the client
  only reports.

Forking after those imports is safe because the server holds one thread when it forks,
and no CUDA context: `fork()` copies only the calling thread, so a pool of worker
threads (OpenMP's, say) would be missing in the child while its locks looked taken.
`import torch` starts no OpenMP pool (that waits for the first parallel operation) and
initializes no CUDA (that waits for the first use); the server runs neither. numpy's
and scipy's OpenBLAS do start worker threads at import, but OpenBLAS stops them before
every fork (pthread_atfork) and restarts them on first use, so one throw-away fork
after the imports leaves the server with one thread. The server checks this, and
refuses to serve (clients then run cold) if a thread or CUDA is still there.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import hashlib
import json
import os
import resource
import runpy
import select
import signal
import socket
import stat
import struct
import subprocess
import sys
import sysconfig
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
SERVER_ENV = (
    *("OMP_", "MKL_", "KMP_", "OPENBLAS_", "GOTO_", "NUMEXPR_"),  # read at import
    *("CUDA_", "TORCH", "PYTORCH", "LD_", "PYTHON"),
)
INT = struct.Struct("!i")
PR_SET_PDEATHSIG = 1


class Unavailable(Exception):
    """No server could be reached or started; the script may still run cold."""


def server_key() -> str:
    """What a server's imports and children depend on: interpreter, installed packages,
    environment, resource limits (children inherit the server's)."""
    site = Path(sysconfig.get_paths()["purelib"])
    env = sorted((k, v) for k, v in os.environ.items() if k.startswith(SERVER_ENV))
    limits = [
        resource.getrlimit(getattr(resource, n)) for n in dir(resource) if n.startswith("RLIMIT_")
    ]
    text = json.dumps([sys.executable, sys.prefix, site.stat().st_mtime_ns, env, limits])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def socket_path() -> Path:
    if "ADVLAND_WARM_DIR" in os.environ:
        folder = Path(os.environ["ADVLAND_WARM_DIR"])
    elif "XDG_RUNTIME_DIR" in os.environ:
        folder = Path(os.environ["XDG_RUNTIME_DIR"], "advland-warm")
    else:
        folder = Path(f"/tmp/advland-warm-{os.getuid()}")
    return folder / f"{server_key()}.sock"


def private(folder: Path) -> None:
    """Create `folder` if missing; Unavailable unless it is a folder only this user can enter."""
    with contextlib.suppress(FileExistsError):
        folder.mkdir(mode=0o700, parents=True)
    info = folder.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise Unavailable(f"{folder} must be a folder of uid {os.getuid()} with mode 0700")


def peer_uid(conn: socket.socket) -> int:
    """The uid of the process at the other end of a Unix socket (SO_PEERCRED)."""
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", creds)[1]


# ---- client ---------------------------------------------------------------------------


def die_with_launcher() -> None:
    """Be SIGKILLed when the process that launched this one dies (module doc)."""
    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG)")
    if os.getppid() != parent:  # it died before the signal was set
        os.kill(os.getpid(), signal.SIGKILL)
    pid = launcher()
    if pid != parent:
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            os.kill(os.getpid(), signal.SIGKILL)
        threading.Thread(target=kill_self_after, args=(pidfd,), daemon=True).start()


def launcher() -> int:
    """Our parent, or under DVC the nearest ancestor without our DVC_STAGE: DVC itself."""
    pid, stage = os.getppid(), os.environ.get("DVC_STAGE")
    with contextlib.suppress(OSError, IndexError):
        while stage is not None and pid > 1:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            if f"DVC_STAGE={stage}".encode() not in environ:
                break
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    return pid


def kill_self_after(pidfd: int) -> None:
    select.select([pidfd], [], [])  # readable once that process has exited
    os.kill(os.getpid(), signal.SIGKILL)


def connect(path: Path) -> socket.socket:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(str(path))
    except OSError:
        conn.close()
        raise
    if peer_uid(conn) != os.getuid():
        conn.close()
        raise Unavailable(f"the server at {path} runs as another user")
    return conn


def connect_or_start(path: Path) -> socket.socket:
    """A connection to the server at `path`, starting it first if none answers."""
    private(path.parent)
    with contextlib.suppress(OSError):
        return connect(path)
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
                cwd="/",  # a daemon holds no client's folder; each child takes its client's
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
        umask = os.umask(0)
        os.umask(umask)
        request = {"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ), "umask": umask}
        payload = json.dumps(request).encode()
        payload = INT.pack(len(payload)) + payload
        sent = socket.send_fds(conn, [payload], [0, 1, 2])
        conn.sendall(payload[sent:])
        (pid,) = INT.unpack(recv_exactly(conn, INT.size))
    except (OSError, ConnectionError) as err:
        raise Unavailable(f"server did not take the request ({err})") from None
    forwarded = []

    def forward(sig, _frame):
        forwarded.append(sig)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, sig)  # the child leads its own process group

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


def preload() -> None:
    """Import PRELOAD and leave this process safe to fork (module doc), else exit."""
    for name in PRELOAD:
        __import__(name)
    child = os.fork()  # runs the pthread_atfork handlers: OpenBLAS stops its threads
    if child == 0:
        os._exit(0)
    os.waitpid(child, 0)
    threads = len(os.listdir("/proc/self/task"))
    cuda = "torch" in sys.modules and sys.modules["torch"].cuda.is_initialized()
    if threads != 1 or cuda:
        sys.exit(f"not safe to fork after the preload: {threads} threads, CUDA initialized: {cuda}")


def serve(path: Path) -> None:
    """Preload, then fork a child per request until IDLE_S seconds pass idle."""
    private(path.parent)
    preload()
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
            if peer_uid(conn) == os.getuid() and os.fork() == 0:
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
        os.setpgid(0, 0)  # a group of its own, for the client's signals and for die_with_client
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
        os.umask(request["umask"])
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
    """Block until the client's end closes; if the script is still running, end its group."""
    with contextlib.suppress(OSError):
        while conn.recv(1):
            pass
    os.killpg(os.getpgrp(), signal.SIGKILL)


def main(argv: list[str]) -> None:
    if argv[:1] == ["--serve"]:
        serve(Path(argv[1]))
        return
    if not argv:
        sys.exit("usage: python -m advland.pipeline.warm SCRIPT [ARGS...]")
    if sys.platform != "linux":  # the launcher's death, SO_PEERCRED, /proc: Linux only
        run_cold(argv)
        return
    die_with_launcher()
    if os.environ.get("ADVLAND_WARM", "1") != "0":
        try:
            sys.exit(run_warm(argv))
        except Unavailable as err:
            print(
                f"advland.pipeline.warm: {err}; running {argv[0]} in this process", file=sys.stderr
            )
    run_cold(argv)


if __name__ == "__main__":
    main(sys.argv[1:])
