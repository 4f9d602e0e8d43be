"""The package's layout: data flows one way through the stages, and no modules import each other in a
circle. The import graph is read from the source with `ast` (imports inside functions included)."""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "vispec_core"
# Stages in the order data flows; a module may import its own stage or an earlier one.
STAGES = ("assets", "cpu", "targets", "drafts", "decoding", "data", "training", "evaluation")
ENTRY_POINTS = ("vispec_core", "vispec_core.__main__", "vispec_core.setup_assets", "vispec_core.reproduce")
CPU_USERS = ("cpu", "targets", "drafts")            # the optional CPU machinery has one way in


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """{module: the vispec_core modules it imports}; `from package import name` counts as importing the
    submodule when `name` is one, else the package."""
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        found = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name.split(".")[0] == "vispec_core"}
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[:len(package.split(".")) - node.level + 1]
                    base = ".".join(base + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                if base.split(".")[0] != "vispec_core":
                    continue
                for a in node.names:
                    found.add(f"{base}.{a.name}" if f"{base}.{a.name}" in files else base)
        assert found <= set(files), f"{name} imports modules that do not exist: {sorted(found - set(files))}"
        graph[name] = found - {name}
    return graph


def stage(module: str) -> str | None:
    """The stage of a module, or None for the entry points (which may import anything)."""
    if module in ENTRY_POINTS:
        return None
    part = module.split(".")[1]
    assert part in STAGES, f"{module} belongs to no stage; add it to STAGES or ENTRY_POINTS"
    return part


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component of more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


@pytest.fixture(scope="module")
def graph():
    return import_graph()


def test_the_graph_sees_imports(graph):
    assert "vispec_core.decoding.tree" in graph["vispec_core.decoding.decode"]
    assert "vispec_core.targets" in graph["vispec_core.data.synthesis"]          # an import inside a function
    assert "vispec_core.data.prompts" in graph["vispec_core.data.tasks"]


def test_no_import_cycle(graph):
    found = cycles(graph)
    assert not found, f"import cycles: {found}"


def test_no_module_imports_a_later_stage(graph):
    bad = []
    for module, imports in graph.items():
        mine = stage(module)
        for other in imports:
            theirs = stage(other)
            if mine is None:
                continue
            if theirs is None or STAGES.index(theirs) > STAGES.index(mine):
                bad.append(f"{module} ({mine}) imports {other} ({theirs or 'entry point'})")
            elif theirs == "cpu" and mine not in CPU_USERS:
                bad.append(f"{module} ({mine}) imports {other}: only {', '.join(CPU_USERS)} use cpu/")
    assert not bad, "\n".join(bad)


def test_the_stage_check_has_teeth():
    graph = {"vispec_core.targets.base": {"vispec_core.decoding.decode"}, "vispec_core.decoding.decode": set()}
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    later = [m for m, imports in graph.items() for o in imports if STAGES.index(stage(o)) > STAGES.index(stage(m))]
    assert later == ["vispec_core.targets.base"]
