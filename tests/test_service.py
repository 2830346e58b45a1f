"""The HTTP service over real HTTP: a `noveltynets serve` process on loopback, httpx clients (issue 22)."""

import pytest

from noveltynets.memory.store import MemoryStore

from .service_helpers import Server, add_user, kill_loop, load_run, wait_job

FAST = {"class": 7, "n": 2, "steps": 3}


def test_near_dup_vs_history_is_the_metrics_rule_on_the_new_rows():
    import numpy as np
    import torch

    from noveltynets import metrics
    from noveltynets.service.app import near_dup_vs_history

    rng = np.random.default_rng(0)
    hist, new = rng.normal(size=(30, 6)).astype(np.float32), rng.normal(size=(9, 6)).astype(np.float32)
    new[3] = hist[4] + 1e-3  # a near-copy of history, and one of an earlier new image
    new[7] = new[1] + 1e-3
    d = metrics.nearest_earlier_distance(torch.from_numpy(np.concatenate([hist, new])))[30:]
    for tau in (0.01, float(np.median(d)), 10.0):
        assert near_dup_vs_history(new, hist, tau) == pytest.approx(float((d < tau).mean()))
    assert near_dup_vs_history(new, np.zeros((0, 6), np.float32), 0.01) == pytest.approx(1 / 9)  # only new[7]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    d = tmp_path_factory.mktemp("service")
    store = d / "m.sqlite"
    tokens = {name: add_user(store, name) for name in ("alice", "bob")}
    srv = Server(store, "--max-n", "16", "--workers", "2", "--service-memory-option", "codes_capacity=100000",
                 cli=True).start()  # the console command itself; its service-wide memories recall by codes
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
    listed = alice.get("/v1/jobs").json()["jobs"]
    assert {done["id"], again["id"]} <= {j["id"] for j in listed} and all(j["status"] == "done" for j in listed if j["id"] in {done["id"], again["id"]})


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


def test_the_service_wide_memory_is_fed_by_everyone_and_read_as_counts_only(server, alice, bob):
    before = alice.get("/v1/memories/service").json()["n_seen"]
    for c, body in ((alice, {"scope": "service"}), (bob, {"memory": "own"}), (bob, {"scope": "session", "guide": []})):
        assert wait_job(c, c.post("/v1/generate", json={**FAST, **body}).json()["job"])["status"] == "done"
    info = bob.get("/v1/memories/service").json()  # guided by it or not, every job's images
    assert info["n_seen"] == before + 6 and set(info) == {"name", "n_seen", "bytes", "classes", "updated"}
    st = MemoryStore(server.store, read_only=True)  # made with the service's --service-memory-option
    try:
        mem, _ = st.load("service.class7")
    finally:
        st.close()
    assert mem.codes is not None and mem.config.codes_capacity == 100_000 and mem.codes.n_offered == mem.n_seen == info["n_seen"]
    assert alice.delete("/v1/memories/service").status_code == 403
    assert alice.post("/v1/memories/service/reset").status_code == 403


def test_clean_reaches_the_sampler_as_in_the_library(alice):
    """A job's clean-up is the library's: the same seeds give the same images as `sample(..., clean=0.5)`, not the plain ones."""
    import io

    import numpy as np
    from PIL import Image

    from noveltynets.data import to_uint8
    from noveltynets.models import load_model
    from noveltynets.sampling import SamplingConfig, sample

    body = {**FAST, "scope": "session", "guide": [], "seed": 11}
    done = wait_job(alice, alice.post("/v1/generate", json={**body, "clean": 0.5}).json()["job"])
    assert done["status"] == "done", done
    got = np.stack([np.asarray(Image.open(io.BytesIO(alice.get(f"/v1/images/{i}").content))) for i in done["images"]])
    model = load_model()
    want = {c: to_uint8(sample(model, [11, 12], SamplingConfig(klass=7, cfg=2.0, steps=3, batch_size=2, clean=c)).images).astype(int)
            for c in (0.0, 0.5)}
    got = got.reshape(want[0.5].shape).astype(int)
    assert np.abs(got - want[0.5]).max() <= 1  # threads may round a pixel differently
    assert np.abs(got - want[0.0]).max() > 16


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
    ({"class": 7, "n": 2, "clean": 1.5}, 422, "clean"),
    ({"class": 7, "n": 2, "steps": 3, "clean": 0.2}, 422, "below the run's last timestep"),
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
            # one worker busy with the first, one pending: the next ones are refused until the queue drains
            replies = [c.post("/v1/generate", json={"class": 1, "n": 2, "steps": 30, "memory": "q"}) for _ in range(4)]
            codes = [r.status_code for r in replies]
            assert codes[0] == 202 and 429 in codes, codes
            assert all("queue is full" in r.json()["error"] for r in replies if r.status_code == 429)
            finished = [wait_job(c, r.json()["job"]) for r in replies if r.status_code == 202]
            assert all(j["status"] == "done" for j in finished)
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


def test_users_cli_prints_a_token_once_and_refuses_bad_names(tmp_path):
    from typer.testing import CliRunner

    from noveltynets.cli import app

    store = tmp_path / "m.sqlite"
    run = lambda *a: CliRunner().invoke(app, ["users", *a, "--store", str(store)])
    out = run("add", "dave")
    assert out.exit_code == 0 and len(out.stdout.strip()) > 30
    assert out.stdout.strip() not in store.with_name(store.name + ".service.sqlite").read_bytes().decode("latin-1")  # hashed
    bad = run("add", "bad name")
    assert bad.exit_code == 2 and "bad user name" in bad.stderr and "Traceback" not in bad.stderr
    assert run("add", "dave").exit_code == 2
    assert run("list").stdout.split() == ["dave"]
    assert run("remove", "dave").exit_code == 0 and run("remove", "dave").exit_code == 2
    serve = CliRunner().invoke(app, ["serve", "--port", "0", "--store", str(store)])
    assert serve.exit_code == 2 and "--port" in serve.stderr
    for option, says in (("codes_capacity=100", "codes_train in 256..codes_capacity"), ("codes=1", "expected KEY=VALUE")):
        serve = CliRunner().invoke(app, ["serve", "--store", str(store), "--service-memory-option", option])
        assert serve.exit_code == 2 and says in serve.stderr and "--service-memory-option" in serve.stderr, serve.stderr
        assert "Traceback" not in serve.stderr


def test_load_8_clients_x_10_requests_every_sample_counted_once(tmp_path):
    """8 users at once, 10 generate requests each, on their own memories and one shared service-wide memory; each
    memory's count (and its sample records) equals the images made for it."""
    stats = load_run(tmp_path / "m.sqlite", clients=8, requests=10)
    assert stats["jobs"] == 80 and stats["p50_s"] <= stats["p95_s"]


def test_kill_9_twenty_times_every_memory_loads_as_committed_and_finished_jobs_stay(tmp_path):
    """kill -9 in the middle of generate/observe, 20 times; after each restart every memory loads (checksums) and is
    exactly what was committed when the process died, its records match its count, and every finished job is served."""
    stats = kill_loop(tmp_path / "m.sqlite", kills=20)
    assert stats["kills"] == 20 and stats["finished_jobs"] >= 5 and stats["interrupted_jobs"] >= 1
