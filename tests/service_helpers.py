"""A real `noveltynets serve` process on a loopback port, for the service tests and benchmarks."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``noveltynets serve --store STORE ARGS...`` started in a process of its own; ``url`` once it answers."""

    def __init__(self, store: Path, *args: str):
        self.store, self.args, self.proc = Path(store), list(args), None
        self.log = self.store.parent / "server.log"

    def start(self, timeout: float = 120.0) -> "Server":
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "noveltynets.cli", "serve", "--store", str(self.store), "--port",
                                          str(self.port), *self.args], stdout=log, stderr=log, env=env)
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited ({self.proc.returncode}): {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.2)
        raise RuntimeError("the server did not answer in time")

    def kill(self) -> None:
        """kill -9: no chance to clean up."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60)


def add_user(store: Path, name: str) -> str:
    from noveltynets.service.db import ServiceDB

    db = ServiceDB(store)
    try:
        return db.add_user(name)
    finally:
        db.close()


def wait_job(client: httpx.Client, job: str, timeout: float = 300.0) -> dict:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        state = client.get(f"/v1/jobs/{job}").json()
        if state["status"] in ("done", "failed", "interrupted"):
            return state
        time.sleep(0.1)
    raise TimeoutError(f"job {job} did not finish")
