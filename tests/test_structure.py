"""The code's structure, as the README promises it: one registry decides per architecture, no import cycles,
short functions, a short train_series.py, and every flag of every script documented in docs/cli.md."""

import ast
import re

from conftest import ROOT

MODULES = sorted(p for p in ROOT.glob("*.py"))
SCRIPTS = sorted(p for p in MODULES if "__main__" in p.read_text()) + sorted((ROOT / "scripts").glob("*.py"))


def test_no_module_but_the_registry_tests_an_architectures_name():
    pattern = re.compile(r"(?<!for )\barch(?:\.name|_name)?\s*(==|!=|\bin\b|\bnot in\b)")
    offenders = [f"{p.name}:{i}" for p in MODULES + sorted((ROOT / "scripts").glob("*.py"))
                 if p.name != "architectures.py"
                 for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line.split("#")[0])]
    assert offenders == []


def test_no_function_is_longer_than_60_lines():
    long = [f"{p.name}:{n.name} ({n.end_lineno - n.lineno + 1})" for p in MODULES
            for n in ast.walk(ast.parse(p.read_text()))
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.end_lineno - n.lineno + 1 > 60]
    assert long == []


def test_train_series_stays_a_short_script():
    assert len((ROOT / "train_series.py").read_text().splitlines()) <= 300


def imports_of(path):
    names = {p.stem for p in MODULES}
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found & names - {path.stem}


def test_the_modules_import_no_cycle():
    graph = {p.stem: imports_of(p) for p in MODULES}
    state = {}

    def visit(node, trail):
        if state.get(node) == "done":
            return
        assert state.get(node) != "open", " -> ".join(trail + [node])
        state[node] = "open"
        for child in sorted(graph[node]):
            visit(child, trail + [node])
        state[node] = "done"

    for module in sorted(graph):
        visit(module, [])


def test_every_flag_of_every_script_is_in_docs_cli():
    cli = (ROOT / "docs" / "cli.md").read_text()
    sections = {part.split("\n")[0].strip(): part for part in cli.split("\n## ")[1:]}
    missing = [f"{p.relative_to(ROOT)} {flag}" for p in SCRIPTS
               for flag in re.findall(r"add_argument\(\s*\"(--[\w-]+)\"", p.read_text())
               if f"`{flag}`" not in sections.get(str(p.relative_to(ROOT)), "")]
    assert missing == []


def test_the_readme_is_short():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 250
