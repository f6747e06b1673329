"""Tie the identifiers defined in spec/ to the tests that name them.

A spec identifier is *defined* by a MyST target line ``(THM-X)=`` followed by a
heading that starts with ``THM-X:``; mentions elsewhere are references. A test
*names* an identifier with ``pytest.mark.theorem("THM-X")``, found with ``ast``
so that strings and comments never count.
"""

import ast
import re
from pathlib import Path

ID = r"(?:THM|DEF)-[A-Z0-9]+(?:-[A-Z0-9]+)*"
_ID_FULL = re.compile(rf"{ID}\Z")
_TARGET = re.compile(rf"\(({ID})\)=\s*\Z")
_HEADING = re.compile(rf"#{{1,6}}\s+({ID}):")
_FENCE = re.compile(r"(`{3,}|~{3,})")
_INDEX_ROW = re.compile(rf"\|\s*\[?({ID})\b")


def _prose_lines(text):
    """Yield (line number, stripped line) outside backtick and tilde fences."""
    fence = None
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        opener = _FENCE.match(stripped)
        if fence is None and opener:
            fence = opener.group(1)
        elif fence is not None and stripped.startswith(fence) and not stripped.strip(fence[0]):
            fence = None
        elif fence is None:
            yield number, stripped


def spec_definitions(text, source):
    """Return ({identifier: [location, ...]}, [problem, ...]) for one spec page."""
    definitions, problems = {}, []
    lines = [(n, s) for n, s in _prose_lines(text) if s]
    for index, (number, line) in enumerate(lines):
        target = _TARGET.match(line)
        heading = _HEADING.match(line)
        if target:
            ident = target.group(1)
            definitions.setdefault(ident, []).append(f"{source}:{number}")
            after = lines[index + 1][1] if index + 1 < len(lines) else ""
            following = _HEADING.match(after)
            if not following or following.group(1) != ident:
                problems.append(f"{source}:{number}: target {ident} is not followed by its heading")
        elif heading:
            before = lines[index - 1][1] if index else ""
            if before != f"({heading.group(1)})=":
                problems.append(f"{source}:{number}: heading {heading.group(1)} has no target")
    return definitions, problems


def _is_theorem_mark(node):
    """Whether node is the attribute `<...>mark.theorem` or `mark.theorem`."""
    if not (isinstance(node, ast.Attribute) and node.attr == "theorem"):
        return False
    owner = node.value
    return (isinstance(owner, ast.Attribute) and owner.attr == "mark") or (
        isinstance(owner, ast.Name) and owner.id == "mark"
    )


def theorem_markers(source_code, source):
    """Return ({identifier: [location, ...]}, [problem, ...]) for one test module."""
    markers, problems = {}, []
    tree = ast.parse(source_code, filename=source)
    called = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and _is_theorem_mark(node.func):
            called.add(id(node.func))
            where = f"{source}:{node.lineno}"
            if not node.args or node.keywords:
                problems.append(f"{where}: theorem marker needs positional identifiers only")
            for arg in node.args:
                literal = isinstance(arg, ast.Constant) and isinstance(arg.value, str)
                if literal and _ID_FULL.match(arg.value):
                    markers.setdefault(arg.value, []).append(where)
                else:
                    problems.append(f"{where}: theorem marker argument is not an identifier literal")
    for node in ast.walk(tree):
        if _is_theorem_mark(node) and id(node) not in called:
            problems.append(f"{source}:{node.lineno}: theorem marker used without an identifier")
    return markers, problems


def _merge(found, into):
    for ident, places in found.items():
        into.setdefault(ident, []).extend(places)


def check(spec_pages, test_modules):
    """Problems tying spec pages ({name: text}) to test modules ({name: code})."""
    defined, named, problems = {}, {}, []
    for name, text in spec_pages.items():
        found, issues = spec_definitions(text, name)
        _merge(found, defined)
        problems += issues
    for name, code in test_modules.items():
        found, issues = theorem_markers(code, name)
        _merge(found, named)
        problems += issues
    for ident, places in sorted(defined.items()):
        if len(places) > 1:
            problems.append(f"{ident} is defined more than once: {', '.join(places)}")
        if ident.startswith("THM-") and ident not in named:
            problems.append(f"{ident} ({places[0]}) has no test marked with it")
    for ident, places in sorted(named.items()):
        if ident not in defined:
            problems.append(f"{', '.join(places)}: {ident} is not defined in the spec")
    return problems


def check_index(spec_pages, index="index.md"):
    """Problems between the identifier table of the index page and the definitions."""
    defined = {}
    for name, text in spec_pages.items():
        _merge(spec_definitions(text, name)[0], defined)
    listed = {m.group(1) for _, s in _prose_lines(spec_pages[index]) if (m := _INDEX_ROW.match(s))}
    missing = [f"{i} is defined but not listed in {index}" for i in sorted(set(defined) - listed)]
    extra = [f"{i} is listed in {index} but not defined" for i in sorted(listed - set(defined))]
    return missing + extra


def unknown_references(spec_pages, texts):
    """Identifiers mentioned in texts ({name: text}) that no spec page defines."""
    defined = {}
    for name, page in spec_pages.items():
        _merge(spec_definitions(page, name)[0], defined)
    return [
        f"{name} refers to {ident}, which the spec does not define"
        for name, text in sorted(texts.items())
        for ident in sorted(set(re.findall(ID, text)) - set(defined))
    ]


def read_spec(directory):
    """Spec pages of a directory as {file name: text}."""
    return {p.name: p.read_text(encoding="utf-8") for p in sorted(Path(directory).glob("*.md"))}


def read_tree(directory, pattern):
    """Files matching a glob pattern under a directory as {relative path: text}."""
    root = Path(directory)
    return {str(p.relative_to(root)): p.read_text(encoding="utf-8") for p in sorted(root.rglob(pattern))}
