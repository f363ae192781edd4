"""The pages under docs/ are kept true like the README: every ```python block runs
against a fresh database, and every relative link, quoted repository path and test
name on those pages and in the README points at something that exists."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from tests._markdown import (
    DOCS,
    README,
    ROOT,
    Block,
    broken_links,
    doc_pages,
    label,
    python_blocks,
    relative_links,
    run_block,
    unknown_references,
)

PAGES = doc_pages()
BLOCKS = [block for page in PAGES for block in python_blocks(page)]
# Every page a reader may follow a link from.
LINKED_PAGES = [README, ROOT / "CHANGELOG.md", *PAGES]


def test_docs_exist_and_have_examples() -> None:
    assert (DOCS / "index.md") in PAGES
    assert len([b for b in BLOCKS if b.runnable]) >= 3


@pytest.mark.parametrize(
    "block",
    [
        pytest.param(b, id=b.id, marks=() if b.runnable else pytest.mark.skip(reason="no-run"))
        for b in BLOCKS
    ],
)
async def test_docs_example_runs(
    block: Block, tmp_path: Path, fresh_database: Callable[[], Awaitable[str]]
) -> None:
    await run_block(block, await fresh_database(), tmp_path)


@pytest.mark.parametrize("page", LINKED_PAGES, ids=label)
def test_relative_links_point_at_existing_files(page: Path) -> None:
    assert broken_links(page) == []


@pytest.mark.parametrize("page", LINKED_PAGES, ids=label)
def test_quoted_paths_and_test_names_exist(page: Path) -> None:
    assert unknown_references(page) == []


def test_the_docs_index_links_every_page() -> None:
    linked = {
        (DOCS / target.partition("#")[0]).resolve()
        for _line, target in relative_links(DOCS / "index.md")
    }
    missing = [label(p) for p in PAGES if p != DOCS / "index.md" and p.resolve() not in linked]
    assert missing == []


def test_the_readme_links_the_docs_index() -> None:
    assert any(t == "docs/index.md" for _line, t in relative_links(README))
