"""A memory's state as one safetensors blob: weights, optimiser state, replay, reference, counters,
RNG state, and in its metadata the config (JSON) and the format version.

Format versions (``format_version`` in the metadata):

- 0: states written before versions were recorded, in every layout they have had (told apart by
  their keys: no ``recall.*`` head, ``opt.*`` for the smooth head's optimiser, no ``replay_final``,
  2 or 3 counters; and configs without ``recall`` or ``target``). :func:`_upgrade_0` brings them to 1.
- 1: the net-only layout.
- 2: may hold a sketch (``sketch.bits``, ``sketch.counters`` = samples added, ``sketch.unit`` = its ℓ), which a
  reader of format 1 would drop without a word; :func:`state_tensors` writes this layout (a state without a sketch
  is the same as in format 1).
- 3: may hold tables of the full embeddings beside it (``sketch_full_tables``: ``sketch_full.bits``, and
  ``sketch.full_unit`` = their ℓ in the full space and the reference's spacing there), which a reader of format 2
  would drop without a word. Without them, the same as format 2.
- 4: may hold a code table as the recall head (``codes_capacity``: ``codes.counters`` = samples offered, then
  ``codes.raw`` = the rows before the codebooks are trained, or ``codes.index`` = faiss's serialised trained index
  without codes and ``codes.table`` = the codes), which a reader of format 3 would drop without a word. Without it,
  the same as format 3.

Loading upgrades a state step by step to the current version; a state from a newer version is refused.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import TYPE_CHECKING, Iterator

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from ...errors import NoveltynetsError
from .config import MemoryConfig

if TYPE_CHECKING:
    from .core import NoveltyMemory

FORMAT_VERSION = 4
Tensors = dict[str, torch.Tensor]


def _heads(mem: NoveltyMemory) -> Iterator[tuple[str, torch.nn.Module, torch.optim.Optimizer]]:
    """(key prefix, net, optimiser) for each head the memory has."""
    for prefix, net, opt in (("net", mem.net, mem.opt), ("recall", mem.recall_net, mem.recall_opt)):
        if net is not None:
            yield prefix, net, opt


def state_tensors(mem: NoveltyMemory) -> Tensors:
    """Everything but the config, as CPU tensors: ``net.*``/``recall.*`` weights, ``net_opt.i.name``/
    ``recall_opt.i.name`` optimiser state, centre and basis (with a projection), replay, replay_final,
    negatives, mean, std, counters (n_seen, train_steps, n_offered, n_ref_final) and gen (RNG state)."""
    t = {}
    for prefix, net, opt in _heads(mem):
        t.update({f"{prefix}.{k}": v for k, v in net.state_dict().items()})
        for i, st in opt.state_dict()["state"].items():
            for k, v in st.items():
                t[f"{prefix}_opt.{i}.{k}"] = v if torch.is_tensor(v) else torch.tensor(v)
    if mem.basis is not None:
        t.update(centre=mem.centre, basis=mem.basis)
    t.update(replay=mem.replay, replay_final=mem.replay_final, negatives=mem.negatives, mean=mem.mean, std=mem.std,
             counters=torch.tensor([mem.n_seen, mem.train_steps, mem.n_offered, mem.n_ref_final]), gen=mem.gen.get_state())
    if mem.sketch is not None:
        t.update({"sketch.bits": mem.sketch.bits, "sketch.unit": torch.tensor([mem.sketch_unit], dtype=torch.float64)})
    if mem.sketch_full is not None:
        t.update({"sketch_full.bits": mem.sketch_full.bits,
                  "sketch.full_unit": torch.tensor([mem.sketch_full_unit, mem._full_spacing], dtype=torch.float64)})
    if mem.sketch is not None or mem.sketch_full is not None:  # every table takes every sample: one count
        t["sketch.counters"] = torch.tensor([mem._sketch_count()])
    if mem.codes is not None:
        t.update(mem.codes.state())
    return {k: v.detach().cpu().contiguous() for k, v in t.items()}


def to_bytes(mem: NoveltyMemory) -> bytes:
    meta = {"format_version": str(FORMAT_VERSION), "config": json.dumps(asdict(mem.config))}
    return st_save(state_tensors(mem), metadata=meta)


def _upgrade_0(config: dict, t: Tensors) -> tuple[dict, Tensors]:
    """Version 0 → 1: fills in what the older layouts lack (a no-op on the last version-0 layout)."""
    # a memory saved before the recall head has none, and one saved before proximity targets classifies
    config = {"recall": False, "target": "classify", **config}
    t = {("net_opt." + k[len("opt."):] if k.startswith("opt.") else k): v for k, v in t.items()}  # optimiser state saved
    # before the recall head
    t.setdefault("replay_final", t["replay"][:0])  # saved before the recall head: no finished samples kept apart
    counters = [int(x) for x in t["counters"]]
    if len(counters) < 3:
        counters.append(counters[0])  # n_offered, saved before trajectories: one embedding per sample
    if len(counters) < 4:
        counters.append(len(t["negatives"]))  # n_ref_final: every reference row a finished sample
    t["counters"] = torch.tensor(counters)
    return config, t


def _upgrade_1(config: dict, t: Tensors) -> tuple[dict, Tensors]:
    """Version 1 → 2: nothing to change (format 1 had no sketch)."""
    return config, t


def _upgrade_2(config: dict, t: Tensors) -> tuple[dict, Tensors]:
    """Version 2 → 3: nothing to change (format 2 had no full-embedding tables)."""
    return config, t


def _upgrade_3(config: dict, t: Tensors) -> tuple[dict, Tensors]:
    """Version 3 → 4: nothing to change (format 3 had no code table)."""
    return config, t


UPGRADES = {0: _upgrade_0, 1: _upgrade_1, 2: _upgrade_2, 3: _upgrade_3}  # version v → v + 1


def _read(blob: bytes) -> tuple[MemoryConfig, Tensors]:
    """The config and tensors of a blob, upgraded to the current format."""
    try:
        header_len = int.from_bytes(blob[:8], "little")
        meta = json.loads(blob[8:8 + header_len]).get("__metadata__", {})
        version = int(meta.get("format_version", 0))
        config, t = json.loads(meta["config"]), st_load(blob)
    except Exception as e:
        raise NoveltynetsError(f"memory data is corrupt ({type(e).__name__})") from None
    if version > FORMAT_VERSION:
        raise NoveltynetsError(f"this memory was saved in format {version}, by a newer noveltynets "
                               f"(this one reads formats up to {FORMAT_VERSION}): upgrade noveltynets to load it")
    if version < 0:
        raise NoveltynetsError(f"memory data is corrupt (format {version})")
    try:
        for v in range(version, FORMAT_VERSION):
            config, t = UPGRADES[v](config, t)
        config = MemoryConfig.from_dict(config)
    except NoveltynetsError:
        raise
    except Exception as e:
        raise NoveltynetsError(f"memory data is corrupt ({type(e).__name__})") from None
    return config, t


def from_bytes(cls: type[NoveltyMemory], blob: bytes, device: str | torch.device = "cpu") -> NoveltyMemory:
    config, t = _read(blob)
    mem = cls(config, device)
    for prefix, net, opt in _heads(mem):
        net.load_state_dict({k[len(prefix) + 1:]: v for k, v in t.items() if k.startswith(prefix + ".")})
        opt_state = opt.state_dict()
        for key, v in t.items():
            if key.startswith(prefix + "_opt."):
                _, i, name = key.split(".", 2)
                opt_state["state"].setdefault(int(i), {})[name] = v
        opt.load_state_dict(opt_state)
    dev = mem.device
    mem.replay, mem.replay_final, mem.negatives = t["replay"].to(dev), t["replay_final"].to(dev), t["negatives"].to(dev)
    mem._ref_version += 1
    mem.mean, mem.std = t["mean"].to(dev), t["std"].to(dev)
    if "basis" in t:
        mem.centre, mem.basis = t["centre"].to(dev), t["basis"].to(dev)
    mem.n_seen, mem.train_steps, mem.n_offered, mem.n_ref_final = [int(x) for x in t["counters"][:4]]
    mem.gen.set_state(t["gen"])
    for sketch, key in ((mem.sketch, "sketch.bits"), (mem.sketch_full, "sketch_full.bits")):
        if sketch is not None and key in t:
            if t[key].shape != sketch.bits.shape:
                raise NoveltynetsError("memory data is corrupt (its sketch does not match its config)")
            sketch.bits, sketch.n_added = t[key].clone(), int(t["sketch.counters"][0])
    if mem.sketch is not None and "sketch.unit" in t:
        mem.sketch_unit = float(t["sketch.unit"][0])
    if mem.sketch_full is not None:
        if "sketch.full_unit" not in t:
            raise NoveltynetsError("memory data is corrupt (its config has full-embedding sketch tables, its data none)")
        mem.sketch_full_unit, mem._full_spacing = (float(v) for v in t["sketch.full_unit"])
    if mem.codes is not None:
        mem.codes.load(t)
    return mem
