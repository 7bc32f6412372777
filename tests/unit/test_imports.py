"""The package's import structure: no cycle between modules, and imports inside functions only
where a comment says why (an optional dependency or a real cycle)."""

import ast
from pathlib import Path

PKG = Path(__file__).parents[2] / "testbed"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str) -> bool:
    rel = Path(*name.split("."))
    return (PKG.parent / rel).with_suffix(".py").exists() or (PKG.parent / rel / "__init__.py").exists()


def top_level_imports(path: Path) -> set[str]:
    """testbed modules imported at module level (not under TYPE_CHECKING, not inside functions)."""
    out: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("testbed")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("testbed"):
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                out.add(sub if is_module(sub) else node.module)
    return out


def graph() -> dict[str, set[str]]:
    return {module_name(p): top_level_imports(p) for p in PKG.rglob("*.py")}


def test_no_import_cycle() -> None:
    g = graph()
    # A package's __init__ runs before its submodules: an edge into a package we are inside of is
    # the parent package's own import, not a cycle of ours.
    for mod, deps in g.items():
        g[mod] = {d for d in deps if not mod.startswith(d + ".")}
    cycles = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for d in sorted(g.get(m, ())):
            if state.get(d) == 1:
                cycles.append(stack[stack.index(d):] + [d])
            elif d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(g):
        if m not in state:
            visit(m)
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


def test_imports_inside_functions_say_why() -> None:
    unexplained = []
    for path in sorted(PKG.rglob("*.py")):
        lines = path.read_text().splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for inner in ast.walk(node):
                if isinstance(inner, (ast.Import, ast.ImportFrom)):
                    here, before = lines[inner.lineno - 1], lines[inner.lineno - 2]
                    if "#" not in here and not before.strip().startswith("#"):
                        unexplained.append(f"{path.relative_to(PKG.parent)}:{inner.lineno}: {here.strip()}")
    assert not unexplained, "\n".join(unexplained)
