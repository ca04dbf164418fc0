"""A warm worker for the step processes of a local run (stdlib only: it runs before any import).

Each job is a fresh `python -m replica ...` process, and most of a short job's time is spent
importing numpy, scipy, torch, matplotlib and papermill (1-3 s), not working. With the config's
`warm_worker: true` (the default), the job's process instead asks a worker that imported
those libraries once to fork a child, and the child runs the step exactly as the job's own
process would: the same argv, environment, working directory and sys.path, writing to the job's
own stdin/stdout/stderr (passed over the socket). Replica's modules are never kept from one job
to the next, so every job reads the checkout's code as it is on disk.

The job's process waits for the child, forwards SIGTERM/SIGINT/SIGHUP to it and exits with
its status; if the job's process dies (even by SIGKILL) the child kills itself, so Snakemake's
view of a job is unchanged. If anything fails before the step starts, the job runs in its own
process as before. One worker serves every checkout that uses the same interpreter and
libraries; it exits after IDLE_S seconds without a job. Never used inside a Slurm job.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

ENABLE_VAR = "REPLICA_WARM_WORKER"  # "1": delegate to a worker (set by the workflow)
IDLE_S = 60.0
STARTUP_S = 30.0  # a worker that has not started listening by then is presumed dead
# Third-party libraries only. numpy and torch read these variables on import, so they are part
# of the worker's identity (a job with other values gets another worker). matplotlib's backend
# is set in the child (run_kernel), not on import.
PRELOAD = (
    "numpy",
    "scipy.linalg",
    "scipy.optimize",
    "scipy.special",
    "scipy.stats",
    "torch",
    "yaml",
    "jinja2",
    "matplotlib.pyplot",
    "nbformat",
    "papermill",
    "nbconvert",
    "ipykernel.kernelapp",
    "ipykernel.debugger",  # the kernel imports it (debugpy) as it starts: 0.1 s a notebook
)
IMPORT_TIME_ENV = ("OMP_", "MKL_", "OPENBLAS_", "KMP_", "TORCH", "PYTORCH", "CUDA")
_HEADER = struct.Struct("!Q")


def run_step(argv: list[str]) -> int:
    """What `python -m replica ARGS` runs, cold or in a worker's child."""
    if argv[:1] == ["kernel"]:
        return run_kernel(argv[1:])
    if argv[:1] == ["gallery"]:
        from replica.gallery import main as gallery_main

        return gallery_main(argv[1:])
    from replica.steps import main as steps_main

    return steps_main(argv)


def run_kernel(argv: list[str]) -> int:
    """An IPython kernel, as `python -m ipykernel_launcher ARGV` starts one. The notebook step
    launches its kernel this way (replica.notebooks), so that a kernel, too, forks warm."""
    if sys.path and sys.path[0] in ("", os.getcwd()):
        del sys.path[0]  # as ipykernel_launcher does; the kernel puts it back
    from ipykernel.kernelapp import IPKernelApp

    app = IPKernelApp.instance()
    # its default was read from the environment when the worker imported ipykernel
    app.parent_handle = int(os.environ.get("JPY_PARENT_PID") or 0)
    app.initialize(argv)
    # The kernel sets MPLBACKEND (inline) while it starts, which matplotlib reads on import; the
    # worker imported it before, so set the backend here. pyplot loads it on the first figure,
    # as in a kernel of its own; the inline backend hooks into the kernel's shell when it is
    # imported, so a copy the worker imported is dropped first.
    if "matplotlib" in sys.modules and os.environ.get("MPLBACKEND"):
        for name in [m for m in sys.modules if m.split(".")[0] == "matplotlib_inline"]:
            del sys.modules[name]
        sys.modules["matplotlib"].rcParams["backend"] = os.environ["MPLBACKEND"]
    app.start()
    return 0


def main(argv: list[str]) -> int:
    if os.environ.get(ENABLE_VAR) == "1" and "SLURM_JOB_ID" not in os.environ:
        status = delegate(argv)
        if status is not None:
            return status
    return run_step(argv)


# ----------------------------------------------------------------------------- identity
def _library_paths() -> list[str]:
    """sys.path without the checkout-specific entries (the cwd, PYTHONPATH)."""
    ours = {os.getcwd(), ""} | set(filter(None, os.environ.get("PYTHONPATH", "").split(":")))
    return [p for p in sys.path if p not in ours]


def socket_path() -> Path:
    """One worker per interpreter, library set (with its install times) and import-time env."""
    paths = _library_paths()
    stamps = [os.stat(p).st_mtime_ns if os.path.isdir(p) else 0 for p in paths]
    env = sorted((k, v) for k, v in os.environ.items() if k.startswith(IMPORT_TIME_ENV))
    key = json.dumps([sys.executable, sys.version, paths, stamps, env, PRELOAD])
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    # /tmp, not the checkout: a socket path may be at most ~107 bytes
    return Path("/tmp") / f"replica-warm-{os.getuid()}" / f"{digest}.sock"


# ----------------------------------------------------------------------------- job side
def delegate(argv: list[str]) -> int | None:
    """Run the step in a worker's child; None if no worker could take it (run it here)."""
    path = socket_path()
    try:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.connect(str(path))
    except OSError:
        start_worker(path)  # for the jobs after this one; this one runs cold
        return None
    request = json.dumps(
        {"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ), "sys_path": sys.path}
    ).encode()
    try:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        socket.send_fds(conn, [_HEADER.pack(len(request))], [0, 1, 2])
        conn.sendall(request)
        replies = conn.makefile("r")
        started = replies.readline().split()
        if started[:1] != ["pid"]:
            return None  # the worker could not fork: nothing ran
    except OSError:
        return None
    child = int(started[1])

    def forward(signum, _frame):
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, forward)
    # From here on the step has started: its status is the job's, whatever it is.
    ended = replies.readline().split()
    if ended[:1] != ["exit"]:
        print("replica: the warm worker died during the step", file=sys.stderr)
        return 1
    return int(ended[1])


def start_worker(path: Path) -> None:
    """A detached worker (its own session: Snakemake's signals to the job do not reach it).
    Jobs that start while it imports do not start another one."""
    starting = path.with_suffix(".starting")
    try:
        path.parent.mkdir(mode=0o700, exist_ok=True)
        if time.time() - starting.stat().st_mtime < STARTUP_S:
            return
    except FileNotFoundError:
        pass
    except OSError:
        return
    try:
        starting.touch()
        subprocess.Popen(
            [sys.executable, "-m", "replica.warm", str(path)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            env={k: v for k, v in os.environ.items() if k != ENABLE_VAR},
            cwd="/",
        )
    except OSError:
        pass


# ----------------------------------------------------------------------------- worker side
def preload() -> None:
    import importlib

    for name in PRELOAD:
        # a library that fails to import here is imported by the child if it needs it
        with contextlib.suppress(Exception):
            importlib.import_module(name)
    if "torch" in sys.modules:  # as runtime.single_thread() does; no pool starts before fork
        torch = sys.modules["torch"]
        torch.set_num_threads(1)
        torch.set_num_interop_threads(1)


def serve(path: Path) -> None:
    """Accept jobs until IDLE_S seconds pass with none running; fork a child for each."""
    preload()
    path.parent.mkdir(mode=0o700, exist_ok=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    staging = path.with_name(f".{os.getpid()}.sock")
    staging.unlink(missing_ok=True)
    listener.bind(str(staging))
    listener.listen(64)
    # Atomic: a worker started at the same moment by another job replaces this one's path,
    # and this one, receiving no jobs, idles out.
    os.replace(staging, path)
    inode = path.stat().st_ino
    path.with_suffix(".starting").unlink(missing_ok=True)
    running: dict[int, socket.socket] = {}
    last = time.monotonic()
    while running or time.monotonic() - last < IDLE_S:
        ready, _, _ = select.select([listener], [], [], 0.05 if running else 1.0)
        if ready:
            conn, _ = listener.accept()
            child = _fork_child(conn, [listener, *running.values()])
            if child is None:
                conn.close()
            else:
                running[child] = conn
        for child, conn in list(running.items()):
            done, status = os.waitpid(child, os.WNOHANG)
            if done:
                code = os.waitstatus_to_exitcode(status)
                with contextlib.suppress(OSError):
                    conn.sendall(f"exit {code if code >= 0 else 128 - code}\n".encode())
                conn.close()
                del running[child]
                last = time.monotonic()
    try:
        if path.stat().st_ino == inode:
            path.unlink()
    except FileNotFoundError:
        pass


def _recv_exactly(conn: socket.socket, size: int) -> bytes:
    chunks, left = [], size
    while left:
        chunk = conn.recv(min(left, 1 << 16))
        if not chunk:
            raise ConnectionError("job closed the connection")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _fork_child(conn: socket.socket, inherited: list[socket.socket]) -> int | None:
    try:
        conn.settimeout(10)
        header, fds, _, _ = socket.recv_fds(conn, _HEADER.size, 3)
        request = json.loads(_recv_exactly(conn, _HEADER.unpack(header)[0]))
        conn.settimeout(None)
    except (OSError, ValueError, struct.error):
        return None
    child = os.fork()
    if child:
        for fd in fds:
            os.close(fd)
        conn.sendall(f"pid {child}\n".encode())
        return child
    # The child: become the job's process (its streams were the worker's /dev/null, now the
    # job's files), then run the step.
    code = 1
    try:
        for other in inherited:  # the listener and other jobs' connections
            other.close()
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, signal.SIG_DFL)
        threading.Thread(target=_die_with_job, args=(conn,), daemon=True).start()
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        sys.path[:] = request["sys_path"]
        sys.argv = [sys.executable, *request["argv"]]
        print(f"[replica] in a child of warm worker {os.getppid()}: pid {os.getpid()}", flush=True)
        for name in [m for m in sys.modules if m == "replica" or m.startswith("replica.")]:
            del sys.modules[name]  # read this checkout's code, not the worker's
        code = run_step(request["argv"])
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        try:
            import atexit

            atexit._run_exitfuncs()
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _die_with_job(conn: socket.socket) -> None:
    """The job's process closed its end: it is gone, and the step must not outlive it."""
    try:
        while conn.recv(1):
            pass
    except OSError:
        pass
    os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    serve(Path(sys.argv[1]))
