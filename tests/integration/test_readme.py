"""Every ```python block of the README runs, as written, against a fresh database.

The checks shared with the pages under docs/ (links, quoted paths and test names) are
in ``test_docs.py``; the helpers in ``tests/_markdown.py``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from tests._markdown import README, Block, python_blocks, run_block

BLOCKS = python_blocks(README)


def test_readme_has_examples() -> None:
    assert len([b for b in BLOCKS if b.runnable]) >= 3


@pytest.mark.parametrize(
    "block",
    [
        pytest.param(b, id=b.id, marks=() if b.runnable else pytest.mark.skip(reason="no-run"))
        for b in BLOCKS
    ],
)
async def test_readme_example_runs(
    block: Block, tmp_path: Path, fresh_database: Callable[[], Awaitable[str]]
) -> None:
    await run_block(block, await fresh_database(), tmp_path)
