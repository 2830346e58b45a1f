"""Layer 10, Ray: many sampler workers, one memory. A memory actor owns the history; each worker guides with its own
copy of it and sends back every batch it finishes.

    import ray
    ray.init(num_cpus=4)
    model, config = load_model(), SamplingConfig(klass=7, cfg=2.0, steps=50)
    with open_distributed(model, config, ["novelty"], memory="sevens", workers=4) as session:
        run = session.sample(range(1024))   # what Session.sample gives: the images in seed order
    session.info()                          # for the manifest, as Session.info

How it works:

- The driver opens the session once with :func:`~noveltynets.session.open_session` (checks every argument, makes
  or loads the named memory and its reference pool), then hands the same arguments to a :class:`MemoryActor` on its
  own node, which opens it again and from then on is the only writer of that history in this run.
- :class:`SamplerWorker` actors (one per GPU, or one per CPU core) hold the model. A worker asks the memory actor
  for the history's state (its ``to_bytes()`` blob and version), binds it to its own guidance term or filter and
  samples the batches the driver gives it. After each batch the term's observer sends the batch's embeddings and
  info (seeds, classes, trajectory) with ``(worker id, batch id)`` to the memory actor, waits for the receipt, and
  asks for weights newer than the version it holds (None, or the new version and blob).
- The memory actor queues the batches it receives and, once ``train_every`` samples are queued (default: one
  batch) or on :meth:`MemoryActor.flush`, teaches the history all of them, in batch order, through
  :meth:`Session.observe_embeddings <noveltynets.session.Session.observe_embeddings>`: for a named memory that is
  one :meth:`MemoryStore.observe <noveltynets.memory.store.MemoryStore.observe>` transaction (training, one row
  per sample with its seed, class and settings, the new state and version). A batch id it has seen before is
  ignored, so a resent batch is never observed twice.
- The driver gives every idle worker the next batch and collects them in order. A worker that dies (killed, its
  machine lost) loses only the batch it was making: that batch goes back in the queue for another worker, with
  the same batch id. (If the dead worker's batch had already reached the memory actor, the resent one is ignored
  there, and that batch's rows then hold the first attempt's embeddings.)

``import noveltynets.distributed`` does not import Ray: the actors are plain classes, made remote when started.
Batch ids are remembered by the memory actor for its life (one run); a restarted memory actor starts afresh.
"""

from __future__ import annotations

import functools
import socket
import uuid
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import torch

from .embed import Embedder, embedder_from_spec, spec_of
from .errors import NoveltynetsError
from .filters import FILTERS, parse_filter
from .memory.store import KINDS, MemoryStore, default_store_path
from .sampling import SampleRun, SamplingConfig
from .sampling.term import GuidanceTerm
from .session import Session, _as_terms, history_owners, open_session, registry

INSTALL = "pip install 'noveltynets[ray]'"


def require_ray():
    """The ``ray`` module, or a one-line error saying how to install it."""
    try:
        import ray
    except ImportError:
        raise NoveltynetsError(f"--workers above 1 and --ray-address need Ray, which is not installed: {INSTALL}") from None
    return ray


def connect(workers: int = 1, address: str | None = None):
    """Ray, ready: the cluster at ``address`` (``host:port``, ``ray://host:port`` or ``auto``), else a new local
    instance with one CPU per worker. A process already connected (a notebook, the tests) stays as it is."""
    if workers < 1:
        raise NoveltynetsError(f"--workers must be at least 1, got {workers}")
    ray = require_ray()
    if address:
        _check_reachable(address)
    if ray.is_initialized():
        return ray
    import logging

    try:
        ray.init(address=address or "local", num_cpus=None if address else workers, include_dashboard=False,
                 logging_level=logging.ERROR)
    except Exception as e:  # ConnectionError, RuntimeError, ValueError: Ray's many ways of saying no
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise NoveltynetsError(f"cannot {'reach the Ray cluster at ' + address if address else 'start Ray'}: {first}") from None
    return ray


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """Refuse a ``host:port`` nobody answers on within ``timeout`` s (``ray.init`` would retry for minutes)."""
    if address in ("auto", "local"):
        return
    hostport = address.removeprefix("ray://")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise NoveltynetsError(f"--ray-address must be host:port, ray://host:port or auto, got {address!r}")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as e:
        raise NoveltynetsError(f"cannot reach the Ray cluster at {address}: {e.strerror or e}") from None


def _get(refs, ray=None):
    """``ray.get``, with an error raised as NoveltynetsError in an actor raised here as one (Ray would wrap it in its
    traceback)."""
    ray = ray or require_ray()
    try:
        return ray.get(refs)
    except ray.exceptions.RayTaskError as e:
        cause = e.cause
        while isinstance(cause, ray.exceptions.RayTaskError):  # raised in an actor that a worker called
            cause = cause.cause
        if isinstance(cause, NoveltynetsError):
            raise NoveltynetsError(str(cause.args[0]) if cause.args else str(cause)) from None
        if isinstance(cause, ray.exceptions.RayActorError):  # a worker's call to the memory actor
            raise NoveltynetsError("the memory actor died; the store keeps every batch it had learnt") from None
        raise


def _as_dicts(guide, filter) -> tuple[list[dict], dict | None]:
    """A run's guidance terms and filter (specs or objects) as their config dicts, without any live state (an attached
    history, observer): what is shipped to the actors, each of which builds its own with :func:`_from_dicts`."""
    filt = parse_filter(filter) if isinstance(filter, str) else filter
    return [t.to_dict() for t in _as_terms(guide)], filt.to_dict() if filt is not None else None


def _from_dicts(terms: list[dict], filt: dict | None) -> tuple[list[GuidanceTerm], object]:
    """Fresh guidance terms and filter from :func:`_as_dicts`' dicts."""
    registry()  # the later layers' terms, registered
    rest = {k: v for k, v in (filt or {}).items() if k != "name"}
    return [GuidanceTerm.from_dict(d) for d in terms], FILTERS[filt["name"]](**rest) if filt else None


@functools.cache
def _remote(cls):
    """``cls`` as a Ray actor class (made once per process)."""
    return require_ray().remote(cls)


# -- the memory actor -----------------------------------------------------------------------------------------
class MemoryActor:
    """Owns one history for a run (a named one in a store, or one for this run only), teaches it the batches that
    sampler workers send, and publishes its versioned state. Its methods run one at a time (a Ray actor's do)."""

    def open(self, model, config: SamplingConfig, terms: list[dict], filt: dict | None, options: dict,
             train_every: int | None = None) -> dict:
        """Open the session the driver opened (:func:`open_session` of the run's term and filter dicts, see
        :func:`_as_dicts`); returns :meth:`plan`."""
        torch.set_num_threads(1)  # this process trains a small net; the CPUs are the workers'
        self.session = open_session(model, config, *_from_dicts(terms, filt), **options)
        self.train_every = train_every or config.batch_size
        self.queue: list[tuple] = []  # (batch id, worker id, embeddings, info) received, not yet learnt
        self.applied: dict = {}  # batch id -> worker id, of every batch learnt
        self.version = self.session.version if self.session.name is not None else 0
        self._published: tuple[int, bytes] | None = None
        return self.plan()

    def plan(self) -> dict:
        """What a worker needs to guide with this history: which of the run's history owners keeps it (its index in
        :func:`history_owners`; None: none is bound), its kind, embedder spec, version and state."""
        s = self.session
        if s.owner is None:
            return {"owner": None}
        owner = next(i for i, o in enumerate(history_owners(s.terms, s.filter)) if o is s.owner)
        version, state = self.weights(-1)
        return {"owner": owner, "kind": s.history.kind, "embedder": spec_of(s.embedder.id), "version": version, "state": state}

    def observe(self, worker: int, batch, embeddings: torch.Tensor, info: dict) -> bool:
        """Queue one finished batch (``info``: its ``seeds``, ``classes``, ``trajectory``) and learn the queue once it
        holds ``train_every`` samples. Returns False for a batch id already received (nothing is queued)."""
        if batch in self.applied or any(q[0] == batch for q in self.queue):
            return False
        self.queue.append((batch, worker, embeddings, info))
        if sum(len(q[2]) for q in self.queue) >= self.train_every:
            self.flush()
        return True

    def flush(self) -> int:
        """Learn every queued batch in one go (for a named memory: one store transaction), in batch order whatever
        order they arrived in; returns the version."""
        if self.queue:
            queued, self.queue = sorted(self.queue, key=lambda q: q[0]), []
            self.session.observe_embeddings(*_merge([(q[2], q[3]) for q in queued]))
            self.applied.update((q[0], q[1]) for q in queued)
            self.version = self.session.version if self.session.name is not None else self.version + 1
        return self.version

    def weights(self, newer_than: int) -> tuple[int, bytes] | None:
        """``(version, state)`` if the history is newer than version ``newer_than``, else None."""
        if self.version <= newer_than:
            return None
        if self._published is None or self._published[0] != self.version:
            self._published = (self.version, self.session.history.to_bytes())
        return self._published

    def batches(self) -> dict:
        """Every batch id learnt, with the worker that sent it."""
        return dict(self.applied)

    def info(self) -> dict | None:
        return self.session.info()

    def close(self) -> None:
        self.flush()
        self.session.close()


def _merge(batches: list[tuple[torch.Tensor, dict]]) -> tuple[torch.Tensor, dict]:
    """Several batches' (embeddings, info) as one."""
    info = {"seeds": [s for _, i in batches for s in i["seeds"]]}
    if all("classes" in i for _, i in batches):
        info["classes"] = torch.cat([torch.as_tensor(i["classes"]) for _, i in batches])
    trajectories = [i["trajectory"] for _, i in batches if i.get("trajectory") is not None]
    info["trajectory"] = torch.cat(trajectories) if trajectories else None
    return torch.cat([e for e, _ in batches]), info


# -- the sampler workers --------------------------------------------------------------------------------------
@dataclass
class RunSpec:
    """What a worker needs to sample a run's batches (the same for every batch; ``token`` names the run)."""

    token: str
    config: SamplingConfig
    terms: list[dict]  # the guidance terms and filter as dicts (see _as_dicts)
    filter: dict | None
    embedder: object  # an Embedder object to use as it is, or None: rebuilt from the memory's spec
    memory: object  # the MemoryActor's handle, or None: the run keeps no history


class SamplerWorker:
    """Holds the model and samples the batches it is given, guided by its copy of the run's history (see module doc)."""

    def __init__(self, worker: int, model, threads: int = 1):
        torch.set_num_threads(threads)  # this process is the worker's own; Ray gave it ``threads`` CPUs
        self.id, self.model, self.run = worker, model, None

    def model_id(self) -> str:
        return self.model.model_id

    def sample(self, spec: RunSpec, batch: int, seeds: list[int]) -> tuple[int, SampleRun]:
        """One batch of the run ``spec``: (this worker's id, its images as :meth:`Session.sample` gives them). Every
        batch the history's owner finishes goes to the memory actor as batch ``(batch, k)``, k = 0, 1... (a filter
        may finish several)."""
        if self.run is None or self.run[0] != spec.token:
            self.run = (spec.token, self._bind(spec))
        elif self.memory is not None:  # what the other workers' batches taught it since this worker's last one
            self.refresh()
        self.batch, self.part = batch, 0
        return self.id, self.run[1].sample(seeds)

    def _bind(self, spec: RunSpec) -> Session:
        self.model.to(spec.config.device)
        terms, filt = _from_dicts(spec.terms, spec.filter)
        self.memory, self.version, self.device = spec.memory, -1, spec.config.device
        if spec.memory is not None:
            plan = _get(spec.memory.plan.remote())
            self.owner, self.kind = history_owners(terms, filt)[plan["owner"]], plan["kind"]
            self.embedder = spec.embedder if isinstance(spec.embedder, Embedder) else embedder_from_spec(plan["embedder"], self.model)
            self._load(plan["version"], plan["state"])
        return Session(self.model, spec.config, terms, filt)

    def _load(self, version: int, state: bytes) -> None:
        self.owner.attach(KINDS[self.kind].from_bytes(state, self.device), self._send, self.embedder)
        self.version = version

    def _send(self, embeddings: torch.Tensor, info: dict) -> None:
        """The history owner's observer: send the batch to the memory actor, then take newer weights if there are."""
        info = {"seeds": [None if s is None else int(s) for s in info["seeds"]],
                **({"classes": info["classes"].cpu()} if "classes" in info else {}),
                "trajectory": None if info.get("trajectory") is None else info["trajectory"].cpu()}
        _get(self.memory.observe.remote(self.id, (self.batch, self.part), embeddings.cpu(), info))
        self.part += 1
        self.refresh()

    def refresh(self) -> int:
        """Take the memory actor's state if it is newer than this worker's copy; returns the version held."""
        newer = _get(self.memory.weights.remote(self.version))
        if newer is not None:
            self._load(*newer)
        return self.version


def start_workers(model, n: int, device: str = "cpu", cpus: int = 1) -> list:
    """``n`` :class:`SamplerWorker` actors holding ``model`` (a DiffusionModel, or Ray's reference to one), each with
    ``cpus`` CPUs and, for a CUDA ``device``, one GPU; refused if the cluster has too few."""
    ray = require_ray()
    if n < 1:
        raise NoveltynetsError(f"--workers must be at least 1, got {n}")
    gpus = 1 if str(device).startswith("cuda") else 0
    have = ray.cluster_resources()
    if have.get("CPU", 0) < n * cpus or have.get("GPU", 0) < n * gpus:
        need = f"{n * cpus} CPUs" + (f" and {n * gpus} GPUs" if gpus else "")
        raise NoveltynetsError(f"{n} workers need {need}; the Ray cluster has {have.get('CPU', 0):g} CPUs and "
                               f"{have.get('GPU', 0):g} GPUs")
    ref = model if isinstance(model, ray.ObjectRef) else ray.put(model)
    actor = _remote(SamplerWorker).options(num_cpus=cpus, num_gpus=gpus)
    workers = [actor.remote(i, ref, cpus) for i in range(n)]
    _get([w.model_id.remote() for w in workers])  # started (and the model loaded) before any batch is given
    return workers


# -- the driver -----------------------------------------------------------------------------------------------
class DistributedSession:
    """A run's memory actor and sampler workers, used like a :class:`~noveltynets.session.Session` (see
    :func:`open_distributed`)."""

    def __init__(self, config: SamplingConfig, spec: RunSpec, workers: list, own_workers: bool, filt=None):
        self.config, self.spec, self.workers, self.own_workers, self.filter = config, spec, list(workers), own_workers, filt
        self.memory = spec.memory
        self.made_by: list[int] = []  # the worker that made each image of the last run
        self._next_batch = 0

    def sample(self, seeds, show_progress: bool = False) -> SampleRun:
        """Images for ``seeds``, ``config.batch_size`` at a time on whichever worker is free, in seed order; the
        history has learnt all of them when this returns."""
        from .progress import progress_bar

        ray, seeds, size = require_ray(), list(seeds), self.config.batch_size
        todo = deque((self._next_batch + k, seeds[a:a + size]) for k, a in enumerate(range(0, len(seeds), size)))
        order = [b for b, _ in todo]
        self._next_batch += len(todo)
        done, running, idle = {}, {}, list(self.workers)
        with progress_bar(len(seeds), "sampling", enabled=show_progress) as advance:
            while todo or running:
                while todo and idle:  # 1. every idle worker takes the next batch
                    worker, (batch, part) = idle.pop(0), todo.popleft()
                    running[worker.sample.remote(self.spec, batch, part)] = (worker, batch, part)
                [ref], _ = ray.wait(list(running))  # 2. the first batch to finish
                worker, batch, part = running.pop(ref)
                try:
                    done[batch] = _get(ref, ray)
                except ray.exceptions.RayActorError:  # 3. its worker died: the batch goes back for another worker
                    self.workers.remove(worker)
                    todo.appendleft((batch, part))
                    if not self.workers:
                        raise NoveltynetsError("every sampler worker died; the memory keeps the batches they finished") from None
                    continue
                idle.append(worker)
                advance(len(part))
        if self.memory is not None:
            _get(self.memory.flush.remote(), ray)
        runs = [done[b][1] for b in order]
        self.made_by = [done[b][0] for b in order for _ in done[b][1].seeds]
        generated = [r.generated for r in runs if r.generated is not None]
        return SampleRun(torch.cat([r.images for r in runs]), [s for r in runs for s in r.seeds],
                         [c for r in runs for c in r.classes], [t for r in runs for t in r.batch_seconds],
                         generated=sum(generated) if generated else None)

    def info(self) -> dict | None:
        """For the manifest, as :meth:`Session.info` (None: the run keeps no history)."""
        return _get(self.memory.info.remote()) if self.memory is not None else None

    def close(self) -> None:
        """Learn what is queued, close the store; end the memory actor and the workers this session started."""
        ray = require_ray()
        if self.memory is not None:
            try:
                _get(self.memory.close.remote(), ray)
            finally:
                ray.kill(self.memory)
                self.memory = None
        if self.own_workers:
            for w in self.workers:
                ray.kill(w)
            self.workers = []

    def __enter__(self) -> "DistributedSession":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_distributed(model, config: SamplingConfig | None = None, guide=(), filter=None, memory: str | None = None, *,
                     workers=2, train_every: int | None = None, **options) -> DistributedSession:
    """A session of ``model`` sampled by ``workers`` Ray actors (a count, or :func:`start_workers`' list to reuse) that
    all guide with, and teach, one history: the arguments and ``options`` are :func:`open_session`'s (``store``,
    ``embedder``, ``negatives``, ``pool_size``, ``scope``...). ``train_every``: samples the memory actor queues before
    it learns them (default: one batch). Ray must be initialised (:func:`connect`); pass ``model`` on the CPU (each
    worker moves its copy to ``config.device``)."""
    ray = require_ray()
    if not ray.is_initialized():
        raise NoveltynetsError("Ray is not running in this process: call noveltynets.distributed.connect() or ray.init() first")
    config = config or SamplingConfig()
    store = options.pop("store", None)
    store = store.path if isinstance(store, MemoryStore) else Path(store) if store is not None else default_store_path()
    options = {**options, "memory": memory, "store": store}
    terms, filt = _as_dicts(guide, filter)
    here_config = config.replace(device="cpu")  # the memory lives on the CPU here and in the memory actor; workers use config's
    # 1. open it here first: every argument checked, the memory and its reference pool made, with a progress bar
    with open_session(model, here_config, *_from_dicts(terms, filt), **options) as here:
        keeps = here.owner is not None
        if not keeps and history_owners(here.terms, here.filter):
            names = " and ".join(o.name for o in history_owners(here.terms, here.filter))
            raise NoveltynetsError(f"{names} keeps its history inside each process: name a memory (--memory) for the workers to share")
    # 2. the memory actor, on this node (it writes the store file here), then the workers
    actor, model_ref = None, ray.put(model)
    if keeps:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        here_node = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        actor = _remote(MemoryActor).options(num_cpus=0, scheduling_strategy=here_node).remote()
        try:
            _get(actor.open.remote(model_ref, here_config, terms, filt, {**options, "show_progress": False}, train_every), ray)
        except BaseException:
            ray.kill(actor)
            raise
    own = not isinstance(workers, (list, tuple))
    try:
        pool = start_workers(model_ref, workers, config.device) if own else list(workers)
        if not own and any(m != model.model_id for m in _get([w.model_id.remote() for w in pool], ray)):
            raise NoveltynetsError(f"the workers given hold another model than {model.model_id}")
    except BaseException:
        if actor is not None:
            ray.kill(actor)
        raise
    embedder = options.get("embedder")
    spec = RunSpec(uuid.uuid4().hex, config, terms, filt, embedder if isinstance(embedder, Embedder) else None, actor)
    return DistributedSession(config, spec, pool, own, _from_dicts([], filt)[1])
