"""The session layer's own contract: who closes the store."""

from noveltynets.memory.store import MemoryStore
from noveltynets.models import load_model
from noveltynets.sampling import SamplingConfig
from noveltynets.session import open_session


def test_a_session_closes_only_a_store_it_opened(tmp_path):
    model, config = load_model(), SamplingConfig(klass=1, steps=2)
    mine = MemoryStore(tmp_path / "mine.sqlite")
    with open_session(model, config, ["repel"], memory="r", store=mine) as s:
        assert s.info()["kind"] == "exact"
    assert mine.exists("r") and mine.names() == ["r"]  # the caller's store is still open for the caller
    with open_session(model, config, ["repel"], memory="r", store=tmp_path / "own.sqlite") as s:
        assert s.owns_store
    assert MemoryStore(tmp_path / "own.sqlite").exists("r")
