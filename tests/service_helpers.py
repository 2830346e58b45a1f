"""A real `noveltynets serve` process on a loopback port, for the service tests and benchmarks."""

from __future__ import annotations

import concurrent.futures as futures
import json
import os
import random
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


LAUNCHER = r"""
import json, os, sys
from pathlib import Path
import uvicorn, noveltynets.service.app  # the slow imports, done once: each server below is a fork of this process
from noveltynets.cli.serve import serve
for line in sys.stdin:
    cmd = json.loads(line)
    if cmd["cmd"] == "wait":
        print(os.waitpid(cmd["pid"], 0)[1], flush=True)
        continue
    pid = os.fork()
    if pid == 0:  # the server: `noveltynets serve`'s own function, its output in the log
        log = os.open(cmd["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        os.dup2(log, 1), os.dup2(log, 2)
        try:
            serve(host="127.0.0.1", port=cmd["port"], store=Path(cmd["store"]), **cmd["options"])
        finally:
            os._exit(0)
    print(pid, flush=True)
"""


class _Launcher:
    """One process that has imported the service and forks a server per start (no 6 s of imports each time)."""

    proc = None

    @classmethod
    def get(cls) -> "subprocess.Popen":
        if cls.proc is None or cls.proc.poll() is not None:
            cls.proc = subprocess.Popen([sys.executable, "-c", LAUNCHER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                        env={**os.environ, "OMP_NUM_THREADS": "1"})
        return cls.proc

    @classmethod
    def ask(cls, **cmd) -> int:
        proc = cls.get()
        proc.stdin.write(json.dumps(cmd) + "\n")
        proc.stdin.flush()
        return int(proc.stdout.readline())


OPTIONS = {"--workers": "workers", "--max-n": "max_n", "--max-queue": "max_queue"}


class Server:
    """A `noveltynets serve --store STORE ARGS...` process; ``url`` once it answers. ``cli=True``: started as the console
    command (``python -m noveltynets.cli serve``); else forked from a process that has imported the service already."""

    def __init__(self, store: Path, *args: str, cli: bool = False):
        self.store, self.args, self.cli, self.pid, self.proc = Path(store), list(args), cli, None, None
        self.log = self.store.parent / "server.log"

    def start(self, timeout: float = 120.0) -> "Server":
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        if self.cli:
            with open(self.log, "ab") as log:
                self.proc = subprocess.Popen([sys.executable, "-m", "noveltynets.cli", "serve", "--store", str(self.store), "--port",
                                              str(self.port), *self.args], stdout=log, stderr=log, env={**os.environ, "OMP_NUM_THREADS": "1"})
        else:
            options = {"workers": 2, "max_n": 64, "max_queue": 32, "service_memory_option": []}
            options.update({OPTIONS[k]: int(v) for k, v in zip(self.args[::2], self.args[1::2])})
            self.pid = _Launcher.ask(cmd="start", port=self.port, store=str(self.store), log=str(self.log), options=options)
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if not self.alive():
                raise RuntimeError(f"the server exited: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError("the server did not answer in time")

    def alive(self) -> bool:
        if self.proc is not None:
            return self.proc.poll() is None
        return _proc_alive(self.pid)  # the launcher's child, not ours: read its state

    def kill(self) -> None:
        """kill -9: no chance to clean up."""
        self._signal(signal.SIGKILL)

    def stop(self) -> None:
        if (self.proc is not None and self.proc.poll() is None) or (self.pid is not None):
            self._signal(signal.SIGTERM, timeout=20)

    def _signal(self, sig, timeout: float | None = None) -> None:
        if self.proc is not None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            return
        if self.pid is None:
            return
        os.kill(self.pid, sig)
        t0 = time.monotonic()
        while timeout is not None and _proc_alive(self.pid) and time.monotonic() - t0 < timeout:
            time.sleep(0.1)
        if _proc_alive(self.pid):
            os.kill(self.pid, signal.SIGKILL)
        _Launcher.ask(cmd="wait", pid=self.pid)  # reaped
        self.pid = None

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60)


def _proc_alive(pid: int) -> bool:
    """Running (a zombie, killed and not yet reaped, is not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


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


def job_ids(store: Path, where: str = "status != 'failed'") -> list[str]:
    from noveltynets.service.db import ServiceDB

    db = ServiceDB(store)
    try:
        return [r["id"] for r in db._rows(f"SELECT id FROM jobs WHERE {where}")]
    finally:
        db.close()


def load_run(store: Path, clients: int = 8, requests: int = 10) -> dict:
    """``clients`` users at once, ``requests`` generate requests each (own memory 2 of 3 times, the service-wide memory
    the third); asserts every job finished and every memory counted each of its images once; latency figures."""
    from noveltynets.memory.store import MemoryStore

    tokens = [add_user(store, f"user{i}") for i in range(clients)]
    srv = Server(store, "--workers", "2", "--max-queue", str(clients * requests)).start()
    try:
        def client_run(i):
            with srv.client(tokens[i]) as c:
                jobs = []
                for k in range(requests):
                    body = {"class": i % 2, "n": 1 + k % 2, "steps": 2, **({"scope": "service"} if k % 3 == 0 else {"memory": "m"})}
                    t0 = time.monotonic()
                    r = c.post("/v1/generate", json=body)
                    assert r.status_code == 202, r.text
                    jobs.append((body, r.json()["job"], t0, time.monotonic() - t0))
                return [(body, wait_job(c, j), t0, submit) for body, j, t0, submit in jobs]

        t0 = time.monotonic()
        with futures.ThreadPoolExecutor(clients) as pool:
            results = list(pool.map(client_run, range(clients)))
        wall = time.monotonic() - t0
    finally:
        srv.stop()
    st = MemoryStore(store)
    try:
        service_total = 0
        for i, jobs in enumerate(results):
            assert all(j["status"] == "done" for _, j, _, _ in jobs), [j for _, j, _, _ in jobs if j["status"] != "done"]
            made = sum(len(j["images"]) for body, j, _, _ in jobs if body.get("memory") == "m")
            assert st.info(f"u.user{i}.m").n_seen == made == st.count_samples(f"u.user{i}.m")
            service_total += sum(len(j["images"]) for _, j, _, _ in jobs)
        assert sum(st.info(n).n_seen for n in st.names() if n.startswith("service.")) == service_total  # everyone's samples
    finally:
        st.close()
    latency = sorted(j["finished"] - j["created"] for jobs in results for _, j, _, _ in jobs)
    running = sorted(j["finished"] - j["started"] for jobs in results for _, j, _, _ in jobs)
    submit = sorted(s for jobs in results for _, _, _, s in jobs)
    pick = lambda xs, q: xs[min(len(xs) - 1, int(q * len(xs)))]
    return {"clients": clients, "requests_each": requests, "jobs": len(latency), "images": sum(len(j["images"]) for jobs in results
            for _, j, _, _ in jobs), "wall_s": wall, "p50_s": pick(latency, 0.5), "p95_s": pick(latency, 0.95),
            "run_p50_s": pick(running, 0.5), "run_p95_s": pick(running, 0.95),
            "submit_p50_s": pick(submit, 0.5), "submit_p95_s": pick(submit, 0.95)}


def committed(store: Path) -> dict[str, tuple[int, int]]:
    """Every memory in the store, loaded (its checksum checked): (samples seen, version); asserts its sample rows match."""
    from noveltynets.memory.store import MemoryStore

    if not store.exists():
        return {}
    st = MemoryStore(store)
    try:
        out = {}
        for name in st.names():
            memory, version = st.load(name)
            assert memory.n_seen == st.count_samples(name) == st.info(name).n_seen, name
            out[name] = (memory.n_seen, version)
        return out
    finally:
        st.close()


def kill_loop(store: Path, kills: int = 20, seed: int = 0) -> dict:
    """Start, submit 3 jobs on 2 memories, ``kill -9`` at a random moment of the generate/observe loop; ``kills`` times.
    After each restart: every memory loads and the service reports exactly what was committed when it died, every
    finished job is still done with the same images, and a sample of its images is served."""
    token = add_user(store, "erin")
    rng = random.Random(seed)
    finished: dict[str, list[str]] = {}
    restarts = []
    srv = Server(store, "--workers", "2")
    for round_ in range(kills + 1):
        before = committed(store)  # what the store holds after the last kill
        t0 = time.monotonic()
        srv.start()
        restarts.append(time.monotonic() - t0)
        with srv.client(token) as c:
            for name, (n_seen, _) in before.items():
                if not name.startswith("u.erin."):
                    continue  # the service-wide memory: read as counts only
                assert c.get(f"/v1/memories/{name.split('.', 2)[2]}").json()["n_seen"] == n_seen, (round_, name)
            for job, images in finished.items():
                state = c.get(f"/v1/jobs/{job}").json()
                assert state["status"] == "done" and state["images"] == images
            for job, images in rng.sample(sorted(finished.items()), min(3, len(finished))):
                assert all(c.get(f"/v1/images/{i}").status_code == 200 for i in images)
            if round_ == kills:
                statuses = [c.get(f"/v1/jobs/{j}").json()["status"] for j in job_ids(store)]
                break
            jobs = [c.post("/v1/generate", json={"class": 7, "n": 4, "steps": 4, "memory": f"m{k % 2}"}).json()["job"]
                    for k in range(3)]
            time.sleep(rng.uniform(1.0, 6.0))  # a random point of the generate/observe loop (a job takes 2-4 s)
            for j in jobs:
                state = c.get(f"/v1/jobs/{j}").json()
                if state["status"] == "done":
                    finished[j] = state["images"]
        srv.kill()
    srv.stop()
    assert set(statuses) <= {"done", "interrupted"}
    return {"kills": kills, "jobs": len(statuses), "finished_jobs": statuses.count("done"),
            "interrupted_jobs": statuses.count("interrupted"), "memories": len(committed(store)),
            "samples_committed": sum(n for n, _ in committed(store).values()), "restart_p50_s": sorted(restarts)[len(restarts) // 2]}
