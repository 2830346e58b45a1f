"""The contract every registered guidance term and filter keeps: its config round-trips, unknown settings are
refused by name, the whole interface is there, and a spec string of its own settings parses back to it."""

import dataclasses
import json

import pytest
import torch

from noveltynets.errors import NoveltynetsError
from noveltynets.filters import FILTERS, Filter, parse_filter
from noveltynets.models import build_scheduler
from noveltynets.sampling import GuidedModel, generate

try:  # the registry of every term, the later layers' included, lives in the session layer
    from noveltynets.session import parse_guide, registry
except ImportError:
    from noveltynets.guidance import parse_guide, registry
try:
    from noveltynets.sampling.term import GuidanceTerm
except ImportError:
    from noveltynets.guidance import GuidanceTerm

TERMS = registry() if callable(registry) else registry
REQUIRED: dict[str, dict] = {}  # settings a term cannot be made without, by name (none today: minority has a shipped classifier)
SHAPE = (1, 8, 8)


def config_fields(cls) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(cls) if f.metadata.get("config", True)]


def spec_of(d: dict) -> str:
    """``NAME:key=value,...`` of a ``to_dict`` result."""
    return d["name"] + ":" + ",".join(f"{k}={v}" for k, v in d.items() if k != "name")


def changed(value):
    """Another valid-looking value of the same type (strings have no generic other value)."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value * 0.5 + 0.05
    return None


def test_the_registries_hold_every_shipped_term_and_filter():
    assert {"cads", "minority", "minority-mix", "minority-self", "novelty", "particle", "point", "repel"} <= set(TERMS)
    assert {"oversample", "knn-filter", "lsh-filter"} <= set(FILTERS)


@pytest.fixture(params=sorted(TERMS))
def term(request):
    return TERMS[request.param](**REQUIRED.get(request.param, {}))


def test_term_config_round_trips(term):
    d = term.to_dict()
    assert d["name"] == term.name and TERMS[term.name] is type(term)
    assert set(d) - {"name"} == {f.name for f in config_fields(type(term))}  # every setting, and no live state
    back = GuidanceTerm.from_dict(json.loads(json.dumps(d)))
    assert type(back) is type(term) and back == term and back.to_dict() == d
    # a changed setting survives too (a round trip of defaults alone would pass if to_dict dropped values)
    tried = []
    for f in config_fields(type(term)):
        new = changed(d[f.name])
        if new is None:
            continue
        try:
            other = type(term)(**{**REQUIRED.get(term.name, {}), f.name: new})
        except NoveltynetsError:  # outside the setting's valid range
            continue
        back = GuidanceTerm.from_dict(json.loads(json.dumps(other.to_dict())))
        assert getattr(back, f.name) == new and back == other and back != term, f.name
        tried.append(f.name)
    assert "scale" in tried


def test_term_refuses_an_unknown_setting_by_name(term):
    with pytest.raises(NoveltynetsError, match="no_such_setting"):
        GuidanceTerm.from_dict({**term.to_dict(), "no_such_setting": 1})
    with pytest.raises(NoveltynetsError, match="no_such_setting"):
        parse_guide(f"{term.name}:no_such_setting=1")
    for f in dataclasses.fields(term):  # live state (a memory, an observer) is not a setting
        if not f.metadata.get("config", True):
            with pytest.raises(NoveltynetsError, match=rf"\b{f.name}\b"):
                GuidanceTerm.from_dict({**term.to_dict(), f.name: None})


def test_term_has_the_whole_interface(term):
    cls = type(term)
    assert isinstance(term, GuidanceTerm) and cls.space in ("x0", "xt")
    assert cls.grad is not GuidanceTerm.grad or cls.log_prob is not GuidanceTerm.log_prob, "neither grad nor log_prob"
    for method in ("grad", "log_prob", "active", "renoises", "renoise", "conditioning", "reset", "on_samples_end", "to_dict"):
        assert callable(getattr(term, method)), method
    for progress in (0.0, 0.5, 0.99):
        assert isinstance(term.active(progress), bool) and isinstance(term.renoises(progress), bool)
    assert not cls(**{**REQUIRED.get(term.name, {}), "scale": 0.0}).active(0.5)  # scale 0 is off


def test_term_parses_from_a_spec_of_its_own_settings(term):
    d = term.to_dict()
    spec = spec_of(d)
    parsed = parse_guide(spec)
    assert type(parsed) is type(term) and parsed == term and parsed.to_dict() == d, spec


@dataclasses.dataclass
class Mute(GuidanceTerm):  # no name: never registered
    pass


def test_a_term_with_neither_grad_nor_log_prob_fails_loudly(tiny_cfg, scheduler_factory):
    assert "" not in TERMS and Mute not in TERMS.values()
    with pytest.raises(NotImplementedError, match="neither"):
        Mute().grad(torch.zeros(1, *SHAPE), {})
    term = Mute(scale=1.0)
    with pytest.raises(NotImplementedError, match="neither"):  # in a run: an error, not a silently skipped term
        generate(GuidedModel(tiny_cfg, [term], build_scheduler().alphas_cumprod), scheduler_factory("ddim", 2), [0], [3],
                 SHAPE, 1)


@pytest.fixture(params=sorted(FILTERS))
def filt(request):
    return FILTERS[request.param]()


def test_filter_config_round_trips_and_parses_from_its_own_spec(filt):
    cls = type(filt)
    d = filt.to_dict()
    assert d["name"] == filt.name and FILTERS[filt.name] is cls
    assert set(d) - {"name"} == {f.name for f in config_fields(cls)}
    back = cls(**{k: v for k, v in json.loads(json.dumps(d)).items() if k != "name"})
    assert back == filt and back.to_dict() == d
    parsed = parse_filter(spec_of(d))
    assert type(parsed) is cls and parsed == filt and parsed.to_dict() == d
    for f in config_fields(cls):
        new = changed(d[f.name])
        if new is None:
            continue
        try:
            other = cls(**{f.name: new})
        except NoveltynetsError:
            continue
        assert parse_filter(spec_of(other.to_dict())) == other != filt, f.name


def test_filter_refuses_an_unknown_setting_by_name(filt):
    with pytest.raises(NoveltynetsError, match="no_such_setting"):
        parse_filter(f"{filt.name}:no_such_setting=1")
    for f in dataclasses.fields(filt):  # live state is not a setting
        if not f.metadata.get("config", True):
            with pytest.raises(NoveltynetsError, match=rf"\b{f.name}\b"):
                parse_filter(f"{filt.name}:{f.name}=x")


def test_filter_has_the_whole_interface(filt):
    from noveltynets.memory.store import KINDS

    cls = type(filt)
    assert isinstance(filt, Filter) and cls.fill is not Filter.fill
    for method in ("run", "fill", "attach", "new_history", "history_embedder", "to_dict"):
        assert callable(getattr(filt, method)), method
    history = filt.new_history(filt.history_embedder())
    assert isinstance(history, KINDS[cls.history_kind]) and history.n_seen == 0  # a history the store can keep by name
