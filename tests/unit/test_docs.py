"""Every Python snippet in the README and docs/ is checked: it compiles, every name it takes
from the library (or from a client library) exists, and a snippet marked
``<!-- quoted from examples/X.py -->`` is a verbatim excerpt of that runnable example, which
the integration tests run. YAML snippets are checked against the API server in
`tests/integration/test_docs_yaml.py`."""

from __future__ import annotations

import ast
import importlib
import inspect
import re
import textwrap
import types
from dataclasses import dataclass
from pathlib import Path

import pytest

import leadership

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
QUOTED = re.compile(r"<!-- quoted from (\S+) -->\s*$")


@dataclass
class Snippet:
    path: Path
    line: int
    language: str
    text: str
    quoted_from: str | None

    def __str__(self) -> str:
        return f"{self.path.name}:{self.line}"


def snippets(language: str) -> list[Snippet]:
    found = []
    for path in DOCS:
        text = path.read_text()
        for m in re.finditer(r"(?m)^```(\w*)\n(.*?)^```", text, re.S):
            if m.group(1) != language:
                continue
            before = text[:m.start()].rstrip("\n").rsplit("\n", 1)[-1]
            marker = QUOTED.search(before)
            found.append(Snippet(path, text[:m.start()].count("\n") + 1, language, m.group(2),
                                 marker.group(1) if marker else None))
    return found


PYTHON = snippets("python")


def test_there_are_snippets_to_check() -> None:
    assert len(PYTHON) >= 10 and sum(s.quoted_from is not None for s in PYTHON) >= 4


@pytest.mark.parametrize("snippet", PYTHON, ids=str)
def test_python_snippet_compiles(snippet: Snippet) -> None:
    compile(snippet.text, str(snippet), "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)


def _resolve(root: object, chain: list[str], where: str) -> None:
    obj = root
    for name in chain:
        if hasattr(obj, name):
            obj = getattr(obj, name)
        elif isinstance(obj, types.ModuleType):  # a submodule not imported yet
            obj = importlib.import_module(f"{obj.__name__}.{name}")
        else:
            raise AssertionError(f"{where}: {'.'.join(chain)} does not exist ({name})")
        if not isinstance(obj, (types.ModuleType, type)):
            return  # a function or a value: what follows is about its result


@pytest.mark.parametrize("snippet", PYTHON, ids=str)
def test_python_snippet_uses_only_names_that_exist(snippet: Snippet) -> None:
    tree = ast.parse(snippet.text)
    bound: dict[str, object] = {"leadership": leadership, "sync": leadership.sync}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                module = importlib.import_module(alias.name)
                bound[alias.asname or alias.name.split(".")[0]] = (
                    module if alias.asname else importlib.import_module(alias.name.split(".")[0]))
        elif isinstance(node, ast.ImportFrom) and node.module:
            module = importlib.import_module(node.module)
            for alias in node.names:
                if not hasattr(module, alias.name):
                    module_name = f"{node.module}.{alias.name}"
                    value: object = importlib.import_module(module_name)
                else:
                    value = getattr(module, alias.name)
                bound[alias.asname or alias.name] = value
    for name in ("kubernetes", "pykube"):
        if re.search(rf"\b{name}\.", snippet.text) and name not in bound:
            bound[name] = importlib.import_module(name)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and not isinstance(node.ctx, ast.Store):
            chain: list[str] = []
            current: ast.expr = node
            while isinstance(current, ast.Attribute):
                chain.insert(0, current.attr)
                current = current.value
            if isinstance(current, ast.Name) and current.id in bound:
                _resolve(bound[current.id], chain, str(snippet))


@pytest.mark.parametrize("snippet", [s for s in PYTHON if s.quoted_from], ids=str)
def test_quoted_snippet_is_verbatim_from_its_runnable_example(snippet: Snippet) -> None:
    assert snippet.quoted_from is not None
    source = (ROOT / snippet.quoted_from).read_text()
    block = textwrap.dedent(snippet.text)
    assert any(textwrap.indent(block, " " * depth, lambda line: bool(line.strip())) in source
               for depth in (0, 4, 8)), f"{snippet} is not an excerpt of {snippet.quoted_from}"


def test_the_documented_candidate_signature_is_the_real_one() -> None:
    text = (ROOT / "docs" / "library.md").read_text()
    documented = re.search(r"```text\nleadership\.Candidate\((.*?)\)\n```", text, re.S)
    assert documented is not None
    names = re.findall(r"(\w+)(?:=[^,]*)?(?:,|$)", documented.group(1).replace("\n", " "))
    assert names == list(inspect.signature(leadership.Candidate).parameters)


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to dashes."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = re.sub(r"(?ms)^```.*?^```", "", path.read_text())  # no headings in code blocks
    return {_slug(m.group(1)) for m in re.finditer(r"(?m)^#+ (.+)$", text)}


LINKS = [(path, target) for path in [*DOCS, ROOT / "manifests" / "README.md"]
         for target in re.findall(r"\]\(([^)\s]+)\)", path.read_text())
         if not re.match(r"[a-z]+:", target)]


def test_there_are_links_to_check() -> None:
    assert len(LINKS) > 20


@pytest.mark.parametrize(("path", "target"), LINKS,
                         ids=[f"{p.name}->{t}" for p, t in LINKS])
def test_every_relative_link_and_anchor_resolves(path: Path, target: str) -> None:
    file, _, anchor = target.partition("#")
    linked = (path.parent / file).resolve() if file else path
    assert linked.exists(), f"{path.name}: {target}: no such file"
    if anchor and linked.suffix == ".md":
        assert anchor in _anchors(linked), f"{path.name}: {target}: no such heading"


# --- measured numbers name their command ------------------------------------------------

#: a number with a unit of time, size or share...
QUANTITY = re.compile(r"\b\d[\d,]*(?:\.\d+)?\s?(?:ms|µs|s|seconds|minutes|MiB|GiB|KiB|cores?|%)"
                      r"(?![\w-])")
#: ...in words that say it was measured, not configured.
MEASURED = re.compile(r"\b(?:measured|measures|p50|p99|median|took|in about|about \d|"
                      r"benchmark|averag\w*|hands? over in|handover)|~\d", re.I)
#: what names a command: a make target, a module run with python -m, a test file, or ours.
COMMAND = re.compile(r"\bmake [a-z][a-z-]*|python -m [\w.]+|tests/[\w/]+\.py|"
                     r"`leadership [a-z]+")


def blocks(text: str) -> list[tuple[int, str]]:
    """Paragraphs, list items' paragraphs and tables, with their first line; code fences
    whole."""
    found: list[tuple[int, str]] = []
    current: list[str] = []
    start, fenced = 1, False
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith("```"):
            fenced = not fenced
        if line.strip() or fenced:
            if not current:
                start = number
            current.append(line)
        elif current:
            found.append((start, "\n".join(current)))
            current = []
    if current:
        found.append((start, "\n".join(current)))
    return found


def unnamed_measurements(path: Path) -> list[str]:
    """Blocks quoting a measured figure without naming the command that measured it: in the
    block itself, in the paragraph that introduces a table, or, for a page that one command
    writes, in its first paragraph."""
    found = blocks(path.read_text())
    prose = [b for _, b in found if not b.startswith(("#", "```"))]
    page_named = bool(prose) and bool(COMMAND.search(prose[0]))
    missing, before = [], ""
    for line, block in found:
        named = page_named or bool(COMMAND.search(block)) or (
            block.startswith("|") and bool(COMMAND.search(before)))
        if not block.startswith("```") and QUANTITY.search(block) and MEASURED.search(block) \
                and not named:
            missing.append(f"{path.name}:{line}: {block[:100]!r}")
        before = block
    return missing


def test_every_measured_number_names_the_command_that_measured_it() -> None:
    missing = [m for path in DOCS for m in unnamed_measurements(path)]
    assert not missing, "name the command (make ..., python -m ..., a test):\n" + \
        "\n".join(missing)


def test_the_measurement_check_catches_an_unnamed_figure(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("# Page\n\nIntro.\n\nA handover took 47 ms on this machine.\n\n"
                    "Named: `make bench-node` measured 47 ms.\n\nA 15 s Lease.\n")
    assert [m.split(":")[1] for m in unnamed_measurements(page)] == ["5"]
