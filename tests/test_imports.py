"""The import graph is one-way: no circle between pwd_agent's modules, lazy imports counted too."""

import ast

from conftest import ROOT

PACKAGE = ROOT / "pwd_agent"


def modules() -> dict[str, ast.Module]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = (ast.parse(path.read_text()), path.name == "__init__.py")
    return out


def import_graph() -> dict[str, set[str]]:
    """Module -> the pwd_agent modules it imports anywhere (function bodies included). Importing
    `a.b.c` also runs the packages `a.b` on the way, unless the importer lives inside them (a
    package's own modules and its __init__ re-exporting them are one unit)."""
    mods = modules()

    def deepest(name: str) -> str:
        while name not in mods:
            name = name.rpartition(".")[0]
        return name

    graph = {}
    for name, (tree, is_package) in mods.items():
        here = name if is_package else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets |= {a.name for a in node.names if a.name.startswith("pwd_agent")}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(here.split(".")[: len(here.split(".")) - node.level + 1] + ([base] if base else []))
                if base.startswith("pwd_agent"):
                    targets |= {f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names}
        deps = set()
        for target in targets:
            module = deepest(target)
            deps.add(module)
            parent = module.rpartition(".")[0]
            while parent.count(".") >= 1 and not (name == parent or name.startswith(parent + ".")):
                deps.add(parent)
                parent = parent.rpartition(".")[0]
        graph[name] = deps - {name}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index, low, on_stack, stack, found = {}, {}, set(), [], []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_circle_counting_lazy_imports():
    assert circles(import_graph()) == []


def test_the_check_finds_a_circle_and_package_runs():
    graph = import_graph()
    assert "pwd_agent.llm" in graph["pwd_agent.agents.runner"]  # importing llm.backends runs llm/__init__
    assert "pwd_agent.agents" not in graph["pwd_agent.store.queries"]  # the drafts come from the leaf schemas.py
    graph["pwd_agent.phrasing"] = {"pwd_agent.recipes"}  # recipes -> phrasing, so this closes a circle
    assert ["pwd_agent.phrasing", "pwd_agent.recipes"] in circles(graph)


def layers(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The same graph one level up: pwd_agent's top-level modules and packages (store, llm, agents,
    nodes...), an arrow wherever one of their modules imports another's."""
    def top(name: str) -> str:
        return ".".join(name.split(".")[:2])

    out: dict[str, set[str]] = {}
    for name, deps in graph.items():
        out.setdefault(top(name), set()).update(top(d) for d in deps if top(d) != top(name))
    return out


def test_packages_are_layered_no_arrow_climbs_back():
    """A circle between packages (llm -> agents -> llm) is an arrow from a lower layer to a higher one."""
    assert circles(layers(import_graph())) == []


def test_the_layer_check_finds_a_package_circle():
    graph = import_graph()
    graph["pwd_agent.llm.offline"] = graph["pwd_agent.llm.offline"] | {"pwd_agent.agents.extractor"}
    assert ["pwd_agent.agents", "pwd_agent.llm"] in circles(layers(graph))


def test_nodes_import_no_sibling_node():
    graph = import_graph()
    for name, deps in graph.items():
        if name.startswith("pwd_agent.nodes."):
            assert not {d for d in deps if d.startswith("pwd_agent.nodes.")}, name


def test_every_public_function_of_the_nodes_says_what_it_does():
    missing = [f"{path.name}:{fn.name}" for path in sorted((PACKAGE / "nodes").glob("*.py"))
               for fn in ast.parse(path.read_text()).body
               if isinstance(fn, ast.FunctionDef) and not fn.name.startswith("_") and not ast.get_docstring(fn)]
    assert missing == []
