"""Shared pieces of the browser tests: start `toporeg serve` in a child process and stop it, find the web package.

Why a child process: the server imports slicer-core, and `import slicer` inside the pytest process would scan every
`slicer/` folder on sys.path (Testing/slicer/ among them: see Testing/slicer/conftest.py). The tests talk to the
server only over HTTP, the websocket and a browser, as users do.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MODULE_DIR = REPO / "TopoReg"
SAMPLE_DATA = REPO / "Resources" / "SampleData"
READY_LINE = "TopoReg web: serving"   # TopoRegWeb.serve.READY_LINE (not imported: keeps this file slicer-free)


def import_web_package():
    """`TopoRegWeb` (its pure-Python parts: access, data_folder) without importing slicer."""
    if str(MODULE_DIR) not in sys.path:
        sys.path.insert(0, str(MODULE_DIR))
    import TopoRegWeb

    return TopoRegWeb


def web_stack_missing() -> str | None:
    """Why the server cannot start here (None when it can)."""
    for package in ("trame_slicer", "trame", "aiohttp"):
        if importlib.util.find_spec(package) is None:
            return f"{package} is not installed (pip install 'toporeg[web]')"
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    process: subprocess.Popen
    url: str
    log_path: Path
    start_seconds: float = 0.0

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        """SIGTERM to the server's process group (the server and any `toporeg` run it started), then SIGKILL."""
        if self.process.poll() is None:
            for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
                try:
                    os.killpg(self.process.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    self.process.wait(timeout=wait)
                    break
                except subprocess.TimeoutExpired:
                    continue


def serve_args(*args: str) -> list[str]:
    return [sys.executable, "-m", "toporeg.cli.main", "serve", "--module-dir", str(MODULE_DIR), *args]


def child_env(extra: dict | None = None) -> dict:
    env = dict(os.environ)
    env.update({"OMP_NUM_THREADS": env.get("OMP_NUM_THREADS", "1"), "PYTHONUNBUFFERED": "1",
                "VTK_DEFAULT_OPENGL_WINDOW": "vtkEGLRenderWindow"})
    env.pop("TOPOREG_SERVE_TOKEN", None)
    env.update(extra or {})
    return env


def start_server(tmp: Path, *args: str, port: int | None = None, env: dict | None = None,
                 timeout: float = 180.0) -> Server:
    """`toporeg serve ARGS --port P` in its own session; returns once it prints its ready line (or fails)."""
    port = port or free_port()
    log_path = tmp / f"server-{port}.log"
    start = time.monotonic()
    with open(log_path, "wb") as log:
        process = subprocess.Popen(serve_args(*args, "--port", str(port)), stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, env=child_env(env), cwd=str(REPO),
                                   start_new_session=True)
    server = Server(process, f"http://127.0.0.1:{port}/", log_path)
    while time.monotonic() - start < timeout:
        if READY_LINE in server.log():
            server.start_seconds = time.monotonic() - start
            return server
        if process.poll() is not None:
            raise RuntimeError(f"toporeg serve exited with {process.returncode}:\n{server.log()[-4000:]}")
        time.sleep(0.2)
    server.stop()
    raise TimeoutError(f"toporeg serve did not start in {timeout:.0f} s:\n{server.log()[-4000:]}")
