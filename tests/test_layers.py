"""The layers of docs/ARCHITECTURE.md: each module imports only from its own layer or those below it
(lazy imports inside functions included), so there is no cycle and the evaluation embedder stays out of
every guidance and training path."""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).parents[1] / "src" / "noveltynets"
LAYERS = {  # top-level module or package -> layer (lower = more basic)
    "errors": 0, "progress": 0, "spec": 0, "__version__": 0, "__init__": 10,
    "data": 1, "models": 2, "embed": 3, "sampling": 4, "memory": 5, "guidance": 6, "filters": 6, "session": 7,
    "minority": 8, "distill": 8, "metrics": 9, "bench": 9, "cli": 10, "integrations": 10, "service": 10, "distributed": 10,
}
GUIDANCE_PATHS = ("embed", "sampling", "memory", "guidance", "filters", "session", "minority", "distill")  # never the evaluation embedder
# (minority: its score labels what minority guidance follows, so the judge must not compute it; distill: its
# ranking is what the distilled model is trained on)


def _top(path: Path) -> str:
    return path.relative_to(SRC).parts[0].removesuffix(".py")


def _imports(path: Path) -> set[str]:
    """Every noveltynets module ``path`` imports, as dotted names below the package."""
    package = path.relative_to(SRC).with_suffix("").parts[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(package[:len(package) - node.level + 1])
                mod = ".".join(base + ([node.module] if node.module else []))
                found |= {mod} if node.module else {f"{mod}.{a.name}".strip(".") for a in node.names}
            elif node.module and node.module.startswith("noveltynets"):
                found.add(node.module.removeprefix("noveltynets").strip("."))
        elif isinstance(node, ast.Import):
            found |= {a.name.removeprefix("noveltynets").strip(".") for a in node.names if a.name.startswith("noveltynets")}
    return {f for f in found if f}


MODULES = sorted(p for p in SRC.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(SRC)))
def test_module_imports_only_its_layer_and_below(path):
    layer = LAYERS[_top(path)]
    for mod in _imports(path):
        top = mod.split(".")[0]
        assert top in LAYERS, f"{mod}: a top-level module missing from the layer table"
        assert LAYERS[top] <= layer, f"{path.relative_to(SRC)} (layer {layer}) imports {mod} (layer {LAYERS[top]})"
        if _top(path) in GUIDANCE_PATHS:
            assert mod != "models.embedder", f"{path.relative_to(SRC)} uses the evaluation embedder"


def test_memory_imports_neither_guidance_nor_sampling():
    for path in (SRC / "memory").rglob("*.py"):
        assert not {m.split(".")[0] for m in _imports(path)} & {"guidance", "sampling", "session"}, path


def test_the_checker_sees_relative_and_lazy_imports(tmp_path):
    probe = SRC / "memory" / "store.py"
    assert "embed.history" in _imports(probe) and "errors" in _imports(probe)
    assert "data" in _imports(SRC / "session.py")  # imported inside real_reference
