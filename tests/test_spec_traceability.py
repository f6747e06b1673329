"""Every theorem in spec/ has a test, and every test names a real identifier."""

from pathlib import Path

import pytest
from _traceability import check, check_index, read_spec, read_tree, spec_definitions, unknown_references

ROOT = Path(__file__).resolve().parent.parent

SPEC = """\
# Page

(DEF-THING)=
## DEF-THING: a thing

(THM-THING-EXISTS)=
### THM-THING-EXISTS: things exist

We use [THM-OTHER](#THM-OTHER) and (THM-OTHER) here, which only refer.

```markdown
(THM-IN-CODE)=
### THM-IN-CODE: inside a fence, not a definition
```
"""

TESTED = """\
import pytest

@pytest.mark.theorem("THM-THING-EXISTS")
def test_things():
    assert 'pytest.mark.theorem("THM-IN-A-STRING")'
"""


def test_definitions_are_targets_with_headings_not_references():
    found, problems = spec_definitions(SPEC, "page.md")
    assert set(found) == {"DEF-THING", "THM-THING-EXISTS"}
    assert problems == []


def test_consistent_inputs_pass():
    assert check({"page.md": SPEC}, {"test_a.py": TESTED}) == []


def test_untested_theorem_fails():
    untested = TESTED.replace("THM-THING-EXISTS", "DEF-THING")
    problems = check({"page.md": SPEC}, {"test_a.py": untested})
    assert len(problems) == 1
    assert "THM-THING-EXISTS" in problems[0]
    assert "no test" in problems[0]


def test_unknown_marker_fails():
    unknown = TESTED + '\n@pytest.mark.theorem("THM-NOWHERE")\ndef test_more():\n    pass\n'
    problems = check({"page.md": SPEC}, {"test_a.py": unknown})
    assert problems == ["test_a.py:7: THM-NOWHERE is not defined in the spec"]


@pytest.mark.parametrize(
    "marker",
    [
        "pytest.mark.theorem(NAME)",
        'pytest.mark.theorem(id="THM-THING-EXISTS")',
        'pytest.mark.theorem("not an identifier")',
        "pytest.mark.theorem()",
        "pytest.mark.theorem",
    ],
)
def test_markers_without_a_literal_identifier_fail(marker):
    code = TESTED + f"\n@{marker}\ndef test_more():\n    pass\n"
    assert check({"page.md": SPEC}, {"test_a.py": code})


def test_param_marks_and_module_marks_count():
    code = (
        "from pytest import mark, param\n"
        'pytestmark = [mark.theorem("THM-THING-EXISTS")]\n'
        'CASES = [param(1, marks=mark.theorem("DEF-THING"))]\n'
    )
    assert check({"page.md": SPEC}, {"test_b.py": code}) == []


def test_malformed_and_duplicate_definitions_fail():
    orphan_target = "(THM-A)=\nSome text.\n"
    orphan_heading = "## THM-B: no target\n"
    problems = check({"a.md": orphan_target + orphan_heading, "b.md": SPEC, "c.md": SPEC}, {})
    assert any("THM-A is not followed by its heading" in p for p in problems)
    assert any("THM-B has no target" in p for p in problems)
    assert any("THM-THING-EXISTS is defined more than once" in p for p in problems)


def test_index_must_list_exactly_the_definitions():
    index = "| id |\n|---|\n| [DEF-THING](#DEF-THING) |\n| [THM-GONE](#THM-GONE) |\n"
    problems = check_index({"index.md": index, "page.md": SPEC})
    assert problems == [
        "THM-THING-EXISTS is defined but not listed in index.md",
        "THM-GONE is listed in index.md but not defined",
    ]


def test_references_to_undefined_identifiers_fail():
    texts = {"mod.py": '"""See spec DEF-THING and THM-THING-EXISTS."""', "doc.md": "as THM-MISSING shows"}
    assert unknown_references({"page.md": SPEC}, texts) == [
        "doc.md refers to THM-MISSING, which the spec does not define"
    ]


def test_real_spec_is_well_formed_and_indexed():
    pages = read_spec(ROOT / "spec")
    assert "theorems.md" in pages
    assert all("has no test" in problem for problem in check(pages, {}))
    assert check_index(pages) == []


def test_library_and_docs_cite_only_defined_identifiers():
    texts = read_tree(ROOT / "dnorm", "*.py") | read_tree(ROOT / "docs", "*.md")
    assert unknown_references(read_spec(ROOT / "spec"), texts) == []


def test_docs_include_every_spec_page():
    for page in read_spec(ROOT / "spec"):
        wrapper = ROOT / "docs" / "spec" / page
        assert wrapper.is_file(), f"docs/spec/{page} is missing"
        assert f"{{include}} ../../spec/{page}" in wrapper.read_text(encoding="utf-8")


def test_every_theorem_has_a_test_and_every_marker_is_defined():
    assert check(read_spec(ROOT / "spec"), read_tree(ROOT / "tests", "test_*.py")) == []
