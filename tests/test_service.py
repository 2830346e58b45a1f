"""The HTTP service over real HTTP: a `noveltynets serve` process on loopback, httpx clients (issue 22)."""

import concurrent.futures as futures
import time
import subprocess
import sys

import pytest

from noveltynets.memory.store import MemoryStore

from .service_helpers import Server, add_user, wait_job

FAST = {"class": 7, "n": 2, "steps": 3}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    d = tmp_path_factory.mktemp("service")
    store = d / "m.sqlite"
    tokens = {name: add_user(store, name) for name in ("alice", "bob")}
    srv = Server(store, "--max-n", "16", "--workers", "2").start()
    srv.tokens = tokens
    yield srv
    srv.stop()


@pytest.fixture
def alice(server):
    with server.client(server.tokens["alice"]) as c:
        yield c


@pytest.fixture
def bob(server):
    with server.client(server.tokens["bob"]) as c:
        yield c


def test_generate_job_images_memory_round_trip(alice):
    r = alice.post("/v1/generate", json={**FAST, "memory": "sevens"})
    assert r.status_code == 202, r.text
    done = wait_job(alice, r.json()["job"])
    assert done["status"] == "done" and done["done"] == done["total"] == 2 and len(done["images"]) == 2
    assert 0.0 <= done["near_dup"] <= 1.0
    png = alice.get(f"/v1/images/{done['images'][0]}")
    assert png.status_code == 200 and png.headers["content-type"] == "image/png" and png.content[:8] == b"\x89PNG\r\n\x1a\n"
    again = wait_job(alice, alice.post("/v1/generate", json={**FAST, "memory": "sevens"}).json()["job"])
    assert again["status"] == "done" and set(again["images"]).isdisjoint(done["images"])
    info = alice.get("/v1/memories/sevens").json()
    assert info["n_seen"] == 4 and info["images"] == 4 and info["class"] == 7 and info["bytes"] > 0 and len(info["recent_near_dup"]) == 2
    assert "sevens" in [m["name"] for m in alice.get("/v1/memories").json()["memories"]]


def test_progress_events_stream_until_the_job_ends(alice):
    job = alice.post("/v1/generate", json={**FAST, "scope": "session"}).json()["job"]
    with alice.stream("GET", f"/v1/jobs/{job}/events") as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [line for line in r.iter_lines() if line.startswith("data:")]
    assert '"status": "done"' in events[-1] and len(events) >= 1


def test_reset_and_delete_a_memory(alice):
    wait_job(alice, alice.post("/v1/generate", json={**FAST, "memory": "scratch"}).json()["job"])
    assert alice.get("/v1/memories/scratch").json()["n_seen"] == 2
    assert alice.post("/v1/memories/scratch/reset").json() == {"reset": "scratch"}
    info = alice.get("/v1/memories/scratch").json()
    assert info["n_seen"] == 0 and info["images"] == 0
    assert alice.delete("/v1/memories/scratch").status_code == 200
    assert alice.get("/v1/memories/scratch").status_code == 404


def test_users_are_isolated_404_not_403(alice, bob):
    done = wait_job(alice, alice.post("/v1/generate", json={**FAST, "memory": "private"}).json()["job"])
    for path in (f"/v1/jobs/{done['id']}", f"/v1/jobs/{done['id']}/events", f"/v1/images/{done['images'][0]}", "/v1/memories/private"):
        r = bob.get(path)
        assert r.status_code == 404 and "error" in r.json(), (path, r.text)
    assert bob.delete("/v1/memories/private").status_code == 404
    assert bob.post("/v1/memories/private/reset").status_code == 404
    assert "private" not in [m["name"] for m in bob.get("/v1/memories").json()["memories"]]
    assert alice.get("/v1/memories/private").json()["n_seen"] == 2  # untouched by bob's tries


def test_the_service_wide_memory_is_fed_by_everyone_and_read_as_counts_only(alice, bob):
    before = alice.get("/v1/memories/service").json()["n_seen"]
    for c in (alice, bob):
        assert wait_job(c, c.post("/v1/generate", json={**FAST, "scope": "service"}).json()["job"])["status"] == "done"
    info = bob.get("/v1/memories/service").json()
    assert info["n_seen"] == before + 4 and set(info) == {"name", "n_seen", "bytes", "classes", "updated"}
    assert alice.delete("/v1/memories/service").status_code == 403
    assert alice.post("/v1/memories/service/reset").status_code == 403


@pytest.mark.parametrize("body, status, says", [
    ({"class": 12, "n": 2}, 422, "class"),
    ({"class": 7, "n": 17}, 422, "at most 16"),
    ({"class": 7, "n": 0}, 422, "n"),
    ({"class": 7, "n": "2"}, 422, "n"),
    ({"class": "seven", "n": 2}, 422, "class"),
    ({"class": 7, "n": 2, "cfg": "high"}, 422, "cfg"),
    ({"class": 7, "n": 2, "steps": 0}, 422, "steps"),
    ({"class": 7, "n": 2, "guide": ["nosuchterm"]}, 422, "nosuchterm"),
    ({"class": 7, "n": 2, "guide": ["novelty:scale=abc"]}, 422, "scale"),
    ({"class": 7, "n": 2, "guide": "novelty"}, 422, "guide"),
    ({"class": 7, "n": 2, "memory": "bad name!"}, 422, "memory name"),
    ({"class": 7, "n": 2, "memory": "service"}, 422, "service"),
    ({"class": 7, "n": 2, "scope": "galaxy"}, 422, "scope"),
    ({"class": 7, "n": 2, "scope": "session", "memory": "m"}, 422, "scope"),
    ({"class": 7, "n": 2, "scope": "service", "guide": []}, 422, "history"),
    ({"class": 7, "n": 2, "unknown": 1}, 422, "unknown"),
    ({"class": 7, "n": 2, "seed": -1}, 422, "seed"),
])
def test_every_bad_request_is_a_4xx_with_a_json_error(alice, body, status, says):
    r = alice.post("/v1/generate", json=body)
    assert r.status_code == status, r.text
    assert says in r.json()["error"], r.json()


def test_bad_bodies_tokens_and_ids(server, alice):
    assert alice.post("/v1/generate", content=b"{not json", headers={"content-type": "application/json"}).status_code == 422
    assert alice.post("/v1/generate", content=b"[1, 2]", headers={"content-type": "application/json"}).status_code == 422
    with server.client() as anon:
        for method, path in (("POST", "/v1/generate"), ("GET", "/v1/memories"), ("GET", "/v1/jobs/x"), ("GET", "/v1/images/x")):
            r = anon.request(method, path, json=FAST)
            assert r.status_code == 401 and "token" in r.json()["error"]
        assert anon.get("/healthz").json()["ok"] is True and anon.get("/").status_code == 200
        assert anon.get("/openapi.json").json()["paths"]["/v1/generate"]
    with server.client("not-a-token") as bad:
        assert bad.get("/v1/memories").status_code == 401
    r = alice.get("/v1/memories", headers={"Authorization": "Basic abc"})
    assert r.status_code == 401
    for path in ("/v1/jobs/nope", "/v1/images/nope", "/v1/memories/nope"):
        assert alice.get(path).status_code == 404
    wait_job(alice, alice.post("/v1/generate", json={**FAST, "memory": "threes", "class": 3}).json()["job"])
    r = alice.post("/v1/generate", json={**FAST, "memory": "threes", "class": 4})
    assert r.status_code == 409 and "class 3" in r.json()["error"]


def test_a_full_queue_answers_429_and_a_restart_keeps_finished_jobs(tmp_path):
    store = tmp_path / "m.sqlite"
    token = add_user(store, "carol")
    srv = Server(store, "--workers", "1", "--max-queue", "1").start()
    try:
        with srv.client(token) as c:
            codes = [c.post("/v1/generate", json={"class": 1, "n": 2, "steps": 40, "memory": "q"}).status_code for _ in range(4)]
            assert codes[0] == 202 and 429 in codes, codes
            r = c.post("/v1/generate", json={"class": 1, "n": 2, "steps": 40, "memory": "q"})
            if r.status_code == 429:
                assert "queue is full" in r.json()["error"]
            done = [wait_job(c, j["id"]) for j in [c.get("/v1/jobs/" + x).json() for x in _job_ids(store)]]
            finished = [j for j in done if j["status"] == "done"]
            assert finished
    finally:
        srv.stop()
    srv = Server(store).start()
    try:
        with srv.client(token) as c:
            for j in finished:
                assert c.get(f"/v1/jobs/{j['id']}").json()["status"] == "done"
                assert all(c.get(f"/v1/images/{i}").status_code == 200 for i in j["images"])
    finally:
        srv.stop()


def _job_ids(store):
    from noveltynets.service.db import ServiceDB

    db = ServiceDB(store)
    try:
        return [r["id"] for r in db._rows("SELECT id FROM jobs WHERE status != 'failed'")]
    finally:
        db.close()


def test_users_cli_prints_a_token_once_and_refuses_bad_names(tmp_path, server):
    store = tmp_path / "m.sqlite"
    run = lambda *a: subprocess.run([sys.executable, "-m", "noveltynets.cli", "users", *a, "--store", str(store)],
                                    capture_output=True, text=True)
    out = run("add", "dave")
    assert out.returncode == 0 and len(out.stdout.strip()) > 30
    assert out.stdout.strip() not in store.with_name(store.name + ".service.sqlite").read_bytes().decode("latin-1")  # hashed
    bad = run("add", "bad name")
    assert bad.returncode == 2 and "bad user name" in bad.stderr and "Traceback" not in bad.stderr
    assert run("add", "dave").returncode == 2
    assert run("list").stdout.split() == ["dave"]
    assert run("remove", "dave").returncode == 0 and run("remove", "dave").returncode == 2


def test_load_8_clients_x_10_requests_every_sample_counted_once(tmp_path):
    """8 users at once, 10 generate requests each, on their own memories and one shared service-wide memory."""
    store = tmp_path / "m.sqlite"
    tokens = [add_user(store, f"user{i}") for i in range(8)]
    srv = Server(store, "--workers", "2", "--max-queue", "200").start()
    try:
        def client_run(i):
            with srv.client(tokens[i]) as c:
                jobs = []
                for k in range(10):
                    body = {"class": i % 2, "n": 1 + k % 2, "steps": 2, **({"scope": "service"} if k % 3 == 0 else {"memory": "m"})}
                    r = c.post("/v1/generate", json=body)
                    assert r.status_code == 202, r.text
                    jobs.append((body, r.json()["job"]))
                return [(body, wait_job(c, j)) for body, j in jobs]

        with futures.ThreadPoolExecutor(8) as pool:
            results = list(pool.map(client_run, range(8)))
        st = MemoryStore(store)
        try:
            service_total = 0
            for i, jobs in enumerate(results):
                assert all(j["status"] == "done" for _, j in jobs), [j for _, j in jobs if j["status"] != "done"]
                made = sum(len(j["images"]) for body, j in jobs if body.get("memory") == "m")
                assert st.info(f"u.user{i}.m").n_seen == made == st.count_samples(f"u.user{i}.m")
                service_total += sum(len(j["images"]) for body, j in jobs if body.get("scope") == "service")
            assert sum(st.info(n).n_seen for n in st.names() if n.startswith("service.")) == service_total
        finally:
            st.close()
    finally:
        srv.stop()


def test_kill_9_twenty_times_every_memory_loads_as_committed_and_finished_jobs_stay(tmp_path):
    """kill -9 in the middle of generate/observe, 20 times; after each restart every memory loads (checksums) and is
    exactly what was committed when the process died, its records match its count, and every finished job is served."""
    import random

    store = tmp_path / "m.sqlite"
    token = add_user(store, "erin")
    rng = random.Random(0)
    finished: dict[str, list[str]] = {}
    srv = Server(store, "--workers", "2")
    for round_ in range(21):
        committed = _committed(store)  # what the store holds after the last kill
        srv.start()
        with srv.client(token) as c:
            for name, (n_seen, version) in committed.items():  # the service reads back exactly that
                if name.startswith("u.erin."):
                    assert c.get(f"/v1/memories/{name.split('.', 2)[2]}").json()["n_seen"] == n_seen, (round_, name)
            for job, images in finished.items():
                state = c.get(f"/v1/jobs/{job}").json()
                assert state["status"] == "done" and state["images"] == images
            for job, images in rng.sample(sorted(finished.items()), min(3, len(finished))):
                assert all(c.get(f"/v1/images/{i}").status_code == 200 for i in images)
            if round_ == 20:
                break
            jobs = [c.post("/v1/generate", json={"class": 7, "n": 4, "steps": 4, "memory": f"m{k % 2}"}).json()["job"]
                    for k in range(3)]
            deadline = time.monotonic() + rng.uniform(0.3, 2.5)
            while time.monotonic() < deadline:  # kill at a random point of the generate/observe loop
                time.sleep(0.05)
            for j in jobs:
                state = c.get(f"/v1/jobs/{j}").json()
                if state["status"] == "done":
                    finished[j] = state["images"]
        srv.kill()
    srv.stop()
    assert len(finished) >= 5  # the kills did not prevent every job from finishing
    srv = Server(store).start()
    try:
        with srv.client(token) as c:  # the jobs that were queued or running at a kill say so
            statuses = {c.get(f"/v1/jobs/{j}").json()["status"] for j in _job_ids(store)}
    finally:
        srv.stop()
    assert statuses <= {"done", "interrupted"} and "interrupted" in statuses


def _committed(store) -> dict[str, tuple[int, int]]:
    """Every memory in the store, loaded (its checksum checked): (samples seen, version); its sample rows match."""
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
