"""The HTTP service: FastAPI over the session API and the memory store (see docs/SERVICE.md).

``create_app(store, workers, max_n, max_pending)`` builds the app; ``noveltynets serve`` runs it with uvicorn. Every
``/v1`` call needs ``Authorization: Bearer <token>`` (``noveltynets users add NAME``); a user sees only their own
memories, jobs and images (another's answer 404). Bad requests answer 4xx with ``{"error": ...}``."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import secrets
import threading
import time
from importlib import resources
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from PIL import Image
from starlette.exceptions import HTTPException as StarletteHTTPException
from pydantic import BaseModel, ConfigDict, Field

from .. import metrics
from ..data import load_mnist5k, to_uint8
from ..errors import NoveltynetsError
from ..memory.store import MemoryStore, check_name
from ..models import load_model
from ..models.embedder import load_eval_embedder
from ..sampling import SamplingConfig
from ..sampling.loop import check_clean, make_scheduler
from ..session import history_owners, open_session, parse_guide
from .db import FINAL, ServiceDB
from .jobs import QueueFull, Scheduler

SERVICE_MEMORY = "service"  # the service-wide memory's name in the API (one per class in the store)
MAX_SEED = 2**62


class GenerateRequest(BaseModel):
    """One batch of images of one class (``class``: a digit, or null for unconditional)."""

    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)
    klass: int | None = Field(None, alias="class", ge=0, le=9, description="digit 0-9, or null: unconditional")
    n: int = Field(8, ge=1, description="images (at most the service's cap)")
    cfg: float = Field(2.0, ge=0, le=20, description="classifier-free guidance scale")
    steps: int = Field(20, ge=1, le=200, description="DDIM steps")
    clean: float = Field(0.0, ge=0, le=1, description="> 0: re-noise each finished image to this fraction of the model's T "
                                                      "timesteps and denoise it again unguided (the CLI's --clean); 0: what "
                                                      "the guidance asks for (novelty: 0.05, after its push to the end)")
    guide: list[str] = Field(["novelty"], max_length=4, description="guidance terms, as the CLI's --guide specs ([] = plain)")
    memory: str | None = Field(None, max_length=64, description="the user's memory (scope user; default 'default')")
    scope: Literal["session", "user", "service"] = Field("user", description="session: this job only; user: the user's named "
                                                                             "memory; service: the service-wide memory")
    seed: int | None = Field(None, ge=0, lt=MAX_SEED, description="first seed (default: fresh random seeds)")


class JobAccepted(BaseModel):
    job: str
    status: str


class ErrorBody(BaseModel):
    error: str


ERRORS = {401: {"model": ErrorBody}, 404: {"model": ErrorBody}, 422: {"model": ErrorBody}}


class Service:
    """What the routes share: the store, the service records, the model, the judge's embedder, the scheduler."""

    def __init__(self, store: str | Path, workers: int = 2, max_n: int = 64, max_pending: int = 32, model=None,
                 service_memory: dict | None = None):
        self.store_path = Path(store)
        self.service_memory = service_memory  # MemoryConfig fields of the service-wide memories it makes (None: defaults)
        MemoryStore(self.store_path).close()  # created (and checked) before the first request
        self.db = ServiceDB(self.store_path)
        self.interrupted = self.db.interrupt_unfinished()
        self.model = model if model is not None else load_model()
        self.evaluator = load_eval_embedder(device="cpu")
        weights = b"".join(p.detach().cpu().numpy().tobytes() for p in self.evaluator.parameters())
        self.evaluator_id = hashlib.sha256(weights).hexdigest()[:16]  # names the judge whose τ the records keep
        self.max_n, self.workers, self.max_pending = max_n, workers, max_pending
        self._tau: dict = {}
        self._tau_lock = threading.Lock()
        self.scheduler = Scheduler(self._run, workers, max_pending)

    # -- names ---------------------------------------------------------------------------
    @staticmethod
    def store_name(user: str | None, scope: str, memory: str | None, klass: int | None) -> str | None:
        """The memory's name in the store: ``u.<user>.<memory>``, ``service.class<k>``, or None (a job's own)."""
        if scope == "user":
            return f"u.{user}.{memory}"
        if scope == "service":
            return f"service.class{'uncond' if klass is None else klass}"
        return None

    def tau(self, klass: int | None) -> float:
        """The near-dup threshold of a class: the 10th percentile of its real images' nearest-neighbour distances."""
        with self._tau_lock:
            if klass not in self._tau:
                key = f"tau:{self.evaluator_id}:{klass}"  # kept in the records: computed once per service, not per start
                known = self.db.meta(key)
                if known is None:
                    data = load_mnist5k()
                    real = data.images if klass is None else data.of_class(klass)
                    known = repr(metrics.near_dup_threshold(self.evaluator.features(real)))
                    self.db.set_meta(key, known)
                self._tau[klass] = float(known)
            return self._tau[klass]

    # -- jobs ----------------------------------------------------------------------------
    def submit(self, user: str, req: GenerateRequest) -> str:
        if req.n > self.max_n:
            raise HTTPException(422, f"n must be at most {self.max_n} on this service, got {req.n}")
        try:
            if req.clean:  # else nothing to check: no scheduler built per request
                check_clean(req.clean, make_scheduler(SamplingConfig().scheduler, self.model.scheduler_config, req.steps))
        except NoveltynetsError as e:
            raise HTTPException(422, str(e)) from None
        try:
            terms = [parse_guide(g) for g in req.guide]
        except NoveltynetsError as e:
            raise HTTPException(422, str(e)) from None
        if req.scope != "user" and req.memory is not None:
            raise HTTPException(422, f"memory names a user memory: scope {req.scope!r} takes none")
        memory = (req.memory or "default") if req.scope == "user" else (SERVICE_MEMORY if req.scope == "service" else None)
        if req.scope == "user":
            try:
                check_name(memory)
            except NoveltynetsError as e:
                raise HTTPException(422, str(e)) from None
            if memory == SERVICE_MEMORY:
                raise HTTPException(422, f"{SERVICE_MEMORY!r} is the service-wide memory's name: use scope service")
            known = self.db.add_memory(user, memory, req.klass, self.store_name(user, "user", memory, req.klass))  # or the one there
            if known["klass"] != req.klass:
                raise HTTPException(409, f"memory {memory!r} holds {_class_name(known['klass'])} images, not {_class_name(req.klass)}")
        keeps = bool(history_owners(terms, None))
        if req.scope == "service" and not keeps:
            raise HTTPException(422, "scope service needs a guide that keeps a history (e.g. novelty)")
        request = req.model_dump(by_alias=True)
        request["seed"] = req.seed if req.seed is not None else secrets.randbelow(MAX_SEED - req.n)
        key = self.store_name(user, req.scope, memory, req.klass)
        job = self.db.add_job(user, request, memory, req.n)
        try:
            self.scheduler.submit(job, key if keeps else None)
        except QueueFull as e:
            self.db.set_status(job, "failed", error=str(e))
            raise HTTPException(429, str(e)) from None
        return job

    def _run(self, job: str) -> None:
        user, req, memory = self.db.job_request(job)
        try:
            self.db.set_status(job, "running", 0)
            images, seeds = self._sample(job, user, req, memory)
            if req["scope"] != "service":  # everyone's samples feed the service-wide memory (a service job's session did)
                self._feed_service(req, images, seeds)
            feats = self.evaluator.features(images).numpy()
            near_dup = self._near_dup(user, memory, req["class"], feats)
            pngs = [_png(im) for im in to_uint8(images)]
            self.db.finish(job, user, memory, list(zip(seeds, pngs, feats)), near_dup)
        except Exception as e:  # the job fails, with its reason; the service goes on
            self.db.set_status(job, "failed", error=f"{type(e).__name__}: {e}" if not isinstance(e, NoveltynetsError) else str(e))

    def _sample(self, job: str, user: str, req: dict, memory: str | None):
        klass, n = req["class"], req["n"]
        config = SamplingConfig(klass=klass, cfg=req["cfg"], steps=req["steps"], batch_size=min(16, n), clean=req.get("clean", 0.0))
        terms = [parse_guide(g) for g in req["guide"]]
        keeps = bool(history_owners(terms, None))
        name = self.store_name(user, req["scope"], memory, klass) if keeps else None
        seeds = list(range(req["seed"], req["seed"] + n))
        parts = []
        service = req["scope"] == "service"
        with open_session(self.model, config, terms, memory=name, store=self.store_path, scope="service" if service else "user",
                          memory_config=self.service_memory if service else None) as session:
            for a in range(0, n, config.batch_size):
                parts.append(session.sample(seeds[a:a + config.batch_size]).images)
                self.db.set_status(job, "running", a + len(parts[-1]))
        return torch.cat(parts), seeds

    def _feed_service(self, req: dict, images: torch.Tensor, seeds: list[int]) -> None:
        """The service-wide memory of the job's class learns its images (one job at a time, as for its own jobs)."""
        name = self.store_name(None, "service", None, req["class"])
        config = SamplingConfig(klass=req["class"], cfg=req["cfg"], steps=req["steps"])
        with self.scheduler.exclusive(name), open_session(self.model, config, ["novelty"], memory=name, store=self.store_path,
                                                          scope="service", memory_config=self.service_memory) as session:
            session.observe(images, {"seeds": seeds})

    def _near_dup(self, user: str, memory: str | None, klass: int | None, feats: np.ndarray) -> float:
        """Share of the job's images nearer than τ to an earlier image of this history (or of the job)."""
        hist = self.db.history_features(user, memory) if memory is not None else np.zeros((0, feats.shape[1]), np.float32)
        return near_dup_vs_history(feats, hist, self.tau(klass))

    # -- memories ------------------------------------------------------------------------
    def memory_info(self, user: str, name: str) -> dict:
        if name == SERVICE_MEMORY:
            return self.service_info()
        rec = self.db.memory(user, name)
        if rec is None:
            raise HTTPException(404, f"no memory {name!r}")
        with _Store(self.store_path) as st:
            info = st.info(rec["store_name"]) if st.exists(rec["store_name"]) else None
        n_images = self.db.count_images(user, name)
        return {"name": name, "class": rec["klass"], "kind": info.kind if info else None, "n_seen": info.n_seen if info else 0,
                "bytes": info.state_bytes if info else 0, "updated": info.updated if info else None, "images": n_images,
                "recent_near_dup": self.db.recent_near_dup(user, name)}

    def service_info(self) -> dict:
        """The service-wide memory, as aggregate counts only."""
        with _Store(self.store_path) as st:
            infos = [st.info(n) for n in st.names() if n.startswith("service.class")]
        return {"name": SERVICE_MEMORY, "n_seen": sum(i.n_seen for i in infos), "bytes": sum(i.state_bytes for i in infos),
                "classes": len(infos), "updated": max((i.updated for i in infos), default=None)}

    def change_memory(self, user: str, name: str, delete: bool) -> None:
        if name == SERVICE_MEMORY:
            raise HTTPException(403, "the service-wide memory cannot be changed through the API")
        rec = self.db.memory(user, name)
        if rec is None:
            raise HTTPException(404, f"no memory {name!r}")
        with self.scheduler.exclusive(rec["store_name"]), _Store(self.store_path) as st:
            if st.exists(rec["store_name"]):
                (st.delete if delete else st.reset)(rec["store_name"])
            self.db.forget_memory(user, name, delete)


def near_dup_vs_history(new: np.ndarray, history: np.ndarray, tau: float) -> float:
    """Share of ``new`` rows nearer than ``tau`` to a ``history`` row or an earlier new row (the rule of
    :func:`noveltynets.metrics.near_dup_rate` on [history; new], for the new rows only: the cost grows with the
    history, not with its square)."""
    x = torch.from_numpy(np.asarray(new, np.float32))
    d = torch.cdist(x, x).masked_fill(~torch.ones(len(x), len(x), dtype=torch.bool).tril(-1), float("inf"))
    if len(history):
        d = torch.cat([d, torch.cdist(x, torch.from_numpy(np.asarray(history, np.float32)))], dim=1)
    return float((d.min(dim=1).values < tau).float().mean())


class _Store:
    """A store opened for one request (SQLite connections stay in their thread)."""

    def __init__(self, path):
        self.path = path

    def __enter__(self) -> MemoryStore:
        self.st = MemoryStore(self.path)
        return self.st

    def __exit__(self, *exc):
        self.st.close()


def _class_name(klass) -> str:
    return "unconditional" if klass is None else f"class {klass}"


def _png(image: np.ndarray) -> bytes:
    """(H, W) uint8 (a row of :func:`~noveltynets.data.to_uint8`) → PNG bytes."""
    buf = io.BytesIO()
    Image.fromarray(np.asarray(image)).save(buf, format="PNG")
    return buf.getvalue()


def create_app(store: str | Path, workers: int = 2, max_n: int = 64, max_pending: int = 32, model=None,
               service_memory: dict | None = None) -> FastAPI:
    service = Service(store, workers, max_n, max_pending, model, service_memory)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        service.scheduler.stop()

    app = FastAPI(title="noveltynets", version="1", description="Images unlike every earlier one: novelty memories over HTTP.",
                  lifespan=lifespan)
    app.state.service = service
    bearer = HTTPBearer(auto_error=False)

    def user(cred: HTTPAuthorizationCredentials | None = Depends(bearer)) -> str:
        name = service.db.user_of(cred.credentials) if cred is not None and cred.scheme.lower() == "bearer" else None
        if name is None:
            raise HTTPException(401, "missing or invalid token (Authorization: Bearer <token>; noveltynets users add NAME)")
        return name

    @app.exception_handler(StarletteHTTPException)  # FastAPI's and Starlette's own (a body that does not parse, 405...)
    async def http_error(request: Request, exc: StarletteHTTPException):
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError):
        errs = exc.errors()
        first = errs[0] if errs else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return JSONResponse({"error": f"{where or 'request'}: {first.get('msg', 'invalid')}",
                             "detail": json.loads(json.dumps(errs, default=str))}, status_code=422)

    @app.exception_handler(NoveltynetsError)
    async def domain_error(request: Request, exc: NoveltynetsError):
        return JSONResponse({"error": str(exc)}, status_code=422)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page():
        return resources.files("noveltynets.service").joinpath("static/index.html").read_text()

    @app.get("/healthz")
    def healthz():
        return {"ok": True, "workers": service.workers, "queued": service.scheduler.queued(), "max_n": service.max_n}

    @app.post("/v1/generate", status_code=202, response_model=JobAccepted, responses={**ERRORS, 409: {"model": ErrorBody},
                                                                                       429: {"model": ErrorBody}})
    def generate(req: GenerateRequest, who: str = Depends(user)):
        return {"job": service.submit(who, req), "status": "queued"}

    def _job(job_id: str, who: str) -> dict:
        job = service.db.job(job_id, who)
        if job is None:
            raise HTTPException(404, f"no job {job_id!r}")
        return {"id": job["id"], "status": job["status"], "done": job["done"], "total": job["total"], "images": job["images"],
                "near_dup": job["near_dup"], "error": job["error"], "memory": job["memory"], "request": job["request"],
                "created": job["created"], "started": job["started"], "finished": job["finished"]}

    @app.get("/v1/jobs", responses=ERRORS)
    def jobs(who: str = Depends(user)):
        return {"jobs": service.db.jobs(who)}

    @app.get("/v1/jobs/{job_id}", responses=ERRORS)
    def job(job_id: str, who: str = Depends(user)):
        return _job(job_id, who)

    @app.get("/v1/jobs/{job_id}/events", responses=ERRORS, response_class=StreamingResponse)
    async def events(job_id: str, who: str = Depends(user)):
        first = await asyncio.to_thread(_job, job_id, who)  # 404 before the stream starts

        async def stream():
            last, state, t0 = None, first, time.monotonic()
            while True:
                shown = {k: state[k] for k in ("status", "done", "total", "near_dup", "error")}
                if shown != last:
                    yield f"event: progress\ndata: {json.dumps({**shown, 'images': state['images']})}\n\n"
                    last = shown
                if state["status"] in FINAL or time.monotonic() - t0 > 600:
                    return
                await asyncio.sleep(0.2)
                state = await asyncio.to_thread(_job, job_id, who)
        return StreamingResponse(stream(), media_type="text/event-stream")

    @app.get("/v1/images/{image_id}", responses={**ERRORS, 200: {"content": {"image/png": {}}}}, response_class=Response)
    def image(image_id: str, who: str = Depends(user)):
        png = service.db.image(image_id, who)
        if png is None:
            raise HTTPException(404, f"no image {image_id!r}")
        return Response(png, media_type="image/png")

    @app.get("/v1/memories", responses=ERRORS)
    def memories(who: str = Depends(user)):
        return {"memories": [service.memory_info(who, m["name"]) for m in service.db.memories(who)], "service": service.service_info()}

    @app.get("/v1/memories/{name}", responses=ERRORS)
    def memory(name: str, who: str = Depends(user)):
        return service.memory_info(who, name)

    @app.delete("/v1/memories/{name}", responses={**ERRORS, 403: {"model": ErrorBody}})
    def delete_memory(name: str, who: str = Depends(user)):
        service.change_memory(who, name, delete=True)
        return {"deleted": name}

    @app.post("/v1/memories/{name}/reset", responses={**ERRORS, 403: {"model": ErrorBody}})
    def reset_memory(name: str, who: str = Depends(user)):
        service.change_memory(who, name, delete=False)
        return {"reset": name}

    return app
