"""The documentation is self-contained: nothing cites design notes that are not in the repository.

Docstrings, comments and Markdown pages may cite the papers (equation, section, algorithm numbers) and the project's
own pages under ``docs/``, but not outside design files (``specs/...``) or their decision codes (``D<n>``, ``P<n>``).
The safety-gymnasium shim numbers its own patches P1-P6 in its module docstring; those labels may stay there.
Every ``docs/`` page that a docstring or page names must exist, and so must a section it quotes.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHIM = Path("plugins/safety-gymnasium/sb3_safe_safety_gymnasium/_shim.py")
SHIM_PATCHES = {f"P{i}" for i in range(1, 7)}

FORBIDDEN = {
    "a design-note path": re.compile(r"specs/"),
    "a design-note citation": re.compile(r"\bspecs?\s+(?:§|L\d|cvpo\.md|linear_mdp\.md|stack\.md)|\bdesign\.md\b"),
    "a decision code": re.compile(r"\bD\d+\b"),
}
PATCH_CODE = re.compile(r"\bP\d+\b")
DOCS_PATH = re.compile(r"\bdocs/[\w/.-]*?\.md\b")
QUOTED_SECTION = re.compile(r"\b(docs/[\w/.-]*?\.md),\s+'([^']+)'")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*$", re.MULTILINE)
MARKDOWN_LINK = re.compile(r"\]\(([\w./-]*\.md|)(?:#([^)\s]+))?\)")  # ](page.md), ](page.md#section), ](#section)


def _relative(paths: list[Path]) -> list[Path]:
    return sorted({path.relative_to(ROOT) for path in paths})


def _checked_files() -> list[Path]:
    """Package sources (core and plugins) and every Markdown page: what a reader of the project reads."""
    python = [*ROOT.glob("sb3_safe/**/*.py"), *ROOT.glob("plugins/*/sb3_safe_*/**/*.py")]
    markdown = [ROOT / "README.md", *ROOT.glob("docs/**/*.md"), *ROOT.glob("plugins/*/README.md")]
    return _relative(python + markdown)


def _files_naming_docs() -> list[Path]:
    """Everything that may point a reader at a docs/ page: sources, plugins, tests, benchmarks, examples, pages."""
    python = [
        *ROOT.glob("sb3_safe/**/*.py"),
        *ROOT.glob("plugins/*/sb3_safe_*/**/*.py"),
        *ROOT.glob("plugins/*/tests/**/*.py"),
        *ROOT.glob("tests/**/*.py"),
        *ROOT.glob("benchmarks/**/*.py"),
        *ROOT.glob("examples/**/*.py"),
    ]
    markdown = [ROOT / "README.md", *ROOT.glob("docs/**/*.md"), *ROOT.glob("plugins/*/README.md")]
    this_file = Path(__file__).resolve().relative_to(ROOT)
    return [path for path in _relative(python + markdown) if path != this_file]


def _flat(text: str) -> str:
    """The text with line breaks and indentation collapsed, so that a wrapped quotation reads as one line."""
    return re.sub(r"\s*\n\s*(?:#\s*)?", " ", text)


def test_the_checked_files_are_found():
    files = _checked_files()
    assert Path("README.md") in files and Path("sb3_safe/cvpo/cvpo.py") in files
    assert {Path("docs/cvpo.md"), Path("docs/linear_agents.md"), Path("docs/cost_protocol.md")} <= set(files)
    assert Path("sb3_safe/cvpo/estep/__init__.py") in files and Path("sb3_safe/cvpo/mstep.py") in files


def test_no_reference_to_design_notes_outside_the_repository():
    offending = []
    for path in _checked_files():
        for number, line in enumerate((ROOT / path).read_text(encoding="utf-8").splitlines(), start=1):
            for what, pattern in FORBIDDEN.items():
                if match := pattern.search(line):
                    offending.append(f"{path}:{number}: {what} {match.group(0)!r}: {line.strip()}")
            for match in PATCH_CODE.finditer(line):
                if not (path == SHIM and match.group(0) in SHIM_PATCHES):
                    offending.append(f"{path}:{number}: a decision code {match.group(0)!r}: {line.strip()}")
    assert not offending, "cite the paper or a docs/ page instead:\n" + "\n".join(offending)


@pytest.mark.parametrize("path", _files_naming_docs(), ids=str)
def test_every_docs_page_and_quoted_section_named_exists(path):
    text = (ROOT / path).read_text(encoding="utf-8")
    missing = sorted({page for page in DOCS_PATH.findall(text) if not (ROOT / page).is_file()})
    assert not missing, f"{path} names docs pages that do not exist: {missing}"
    unknown = []
    for page, section in QUOTED_SECTION.findall(_flat(text)):
        headings = {heading.strip("`") for heading in HEADING.findall((ROOT / page).read_text(encoding="utf-8"))}
        if section not in headings:
            unknown.append(f"{page}, {section!r}")
    assert not unknown, f"{path} quotes sections that are not headings of their page: {unknown}"


def _anchor(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@pytest.mark.parametrize("page", _relative([ROOT / "README.md", *ROOT.glob("docs/**/*.md")]), ids=str)
def test_markdown_links_to_pages_and_sections_resolve(page):
    broken = []
    for target, anchor in MARKDOWN_LINK.findall((ROOT / page).read_text(encoding="utf-8")):
        linked = (ROOT / page).parent / target if target else ROOT / page
        if not linked.is_file():
            broken.append(f"{target} (no such file)")
        elif anchor and anchor not in {_anchor(h) for h in HEADING.findall(linked.read_text(encoding="utf-8"))}:
            broken.append(f"{target}#{anchor} (no such section)")
    assert not broken, f"{page}: {broken}"
