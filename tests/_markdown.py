"""Reading the project's Markdown pages for the tests that keep them true.

The README and every page under ``docs/`` are checked the same way: each ```python
block runs as written against a fresh database (``run_block``), each relative link
points at a file that exists (``broken_links``), and each repository path or test
name quoted in `code` exists (``unknown_references``).

A block that is deliberately not runnable says so in its info string
(```python no-run); it is reported as skipped, never silently left out.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"

PYTHON_LANGUAGES = {"python", "py", "python3"}
NO_RUN = "no-run"

_FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
# A code span opens and closes with backtick runs of the same length.
_INLINE_CODE = re.compile(r"(?<!`)(?P<run>`+)(?!`)(?P<code>.+?)(?<!`)(?P=run)(?!`)", re.DOTALL)
_LINK = re.compile(r"!?\[(?P<text>[^\]]*)\]\((?P<target>[^)\s]+)(?:\s+\"[^\"]*\")?\)")
_REFERENCE_LINK = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*(?P<target>\S+)", re.MULTILINE)
# Paths inside the repository, optionally with a pytest node (`tests/x.py::test_y`).
_REPO_PATH = re.compile(
    r"^(?P<path>(?:\.ci|benchmarks|docs|examples|migrations|pyriver_async|tests)/[\w./*-]*)"
    r"(?:::(?P<node>\w+))?$"
)
_TEST_NAME = re.compile(r"^test_\w+$")


def doc_pages() -> list[Path]:
    """Every page under docs/, in a stable order."""
    return sorted(DOCS.glob("*.md"))


def label(path: Path) -> str:
    """The path as the test ids show it: relative to the repository."""
    return path.relative_to(ROOT).as_posix()


@dataclass(frozen=True)
class Block:
    path: Path
    index: int  # among the page's python blocks, from 0
    line: int  # of the opening fence, from 1
    code: str
    runnable: bool

    @property
    def id(self) -> str:
        return f"{label(self.path)}:{self.index}"


def _fenced(text: str) -> list[tuple[int, str, list[str]]]:
    """(opening line, info string, body lines) of each fenced code block."""
    blocks: list[tuple[int, str, list[str]]] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if m is None:
            i += 1
            continue
        fence, indent, start = m["fence"], len(m["indent"]), i
        body: list[str] = []
        i += 1
        while i < len(lines):
            close = _FENCE.match(lines[i])
            if close and close["fence"].startswith(fence) and not close["info"].strip():
                break
            line = lines[i]
            body.append(line[min(indent, len(line) - len(line.lstrip(" "))) :])
            i += 1
        blocks.append((start + 1, m["info"].strip(), body))
        i += 1
    return blocks


def python_blocks(path: Path) -> list[Block]:
    """The page's ```python (or ```py) blocks, in order."""
    found: list[Block] = []
    for line, info, body in _fenced(path.read_text()):
        words = info.split()
        if not words or words[0].lower() not in PYTHON_LANGUAGES:
            continue
        found.append(
            Block(
                path=path,
                index=len(found),
                line=line,
                code="\n".join(body) + "\n",
                runnable=NO_RUN not in words[1:],
            )
        )
    return found


async def run_block(block: Block, url: str, tmp_path: Path) -> None:
    """Run one block as a script with DATABASE_URL set; fail with its output."""
    script = tmp_path / f"{block.path.stem}_{block.index}.py"
    script.write_text(block.code)
    proc = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, str(script)],
        env={**os.environ, "DATABASE_URL": url},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, (
        f"{block.id} (the block at line {block.line}) failed:\n{proc.stdout}\n{proc.stderr}"
    )


def _without_fences(text: str) -> str:
    """The page with its fenced blocks blanked out, line numbers kept."""
    lines = text.splitlines()
    for start, _info, body in _fenced(text):
        for n in range(start - 1, min(start + len(body) + 1, len(lines))):
            lines[n] = ""
    return "\n".join(lines)


def _prose(text: str) -> str:
    """The page without its fenced blocks and inline code, line numbers kept."""
    return _INLINE_CODE.sub(lambda m: re.sub(r"[^\n]", " ", m[0]), _without_fences(text))


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading."""
    text = re.sub(r"[`*]|<[^>]+>", "", heading).strip().lower()
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    return re.sub(r"\s", "-", re.sub(r"[^\w\s-]", "", text))


@cache
def anchors(path: Path) -> frozenset[str]:
    """The anchors of a page's headings (a repeated heading gets -1, -2, ...)."""
    seen: dict[str, int] = {}
    found: set[str] = set()
    for line in _without_fences(path.read_text()).splitlines():
        m = re.match(r"^ {0,3}#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m is None:
            continue
        base = slug(m[1])
        n = seen.get(base, 0)
        seen[base] = n + 1
        found.add(f"{base}-{n}" if n else base)
    return frozenset(found)


def relative_links(path: Path) -> list[tuple[int, str]]:
    """(line, target) of every link on the page that is not a URL."""
    prose = _prose(path.read_text())
    found: list[tuple[int, str]] = []
    for pattern in (_LINK, _REFERENCE_LINK):
        for m in pattern.finditer(prose):
            target = m["target"].strip("<>")
            if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):
                continue  # https:, mailto:, ...
            found.append((prose.count("\n", 0, m.start()) + 1, target))
    return sorted(found)


def broken_links(path: Path) -> list[str]:
    """What is wrong with the page's relative links, one message each."""
    problems: list[str] = []
    for line, target in relative_links(path):
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        where = f"{label(path)}:{line}: {target}"
        if not dest.exists():
            problems.append(f"{where}: no such file")
        elif not dest.is_relative_to(ROOT):
            problems.append(f"{where}: outside the repository")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            problems.append(f"{where}: no heading with anchor #{anchor} in {label(dest)}")
    return problems


@cache
def _defined_tests() -> dict[str, frozenset[str]]:
    """Test function names defined in each file under tests/."""
    found: dict[str, frozenset[str]] = {}
    for file in (ROOT / "tests").rglob("test_*.py"):
        names = re.findall(r"^(?:async )?def (test_\w+)\(", file.read_text(), re.MULTILINE)
        found[file.relative_to(ROOT).as_posix()] = frozenset(names)
    return found


def unknown_references(path: Path) -> list[str]:
    """Repository paths and test names the page quotes in `code` that do not exist.

    A bare `test_name` must be defined somewhere under tests/; a
    `tests/file.py::test_name` must be defined in that file; a path may hold a glob.
    """
    problems: list[str] = []
    prose = _without_fences(path.read_text())
    every_test = frozenset().union(*_defined_tests().values())
    for m in _INLINE_CODE.finditer(prose):
        code = m["code"].strip()
        where = f"{label(path)}:{prose.count(chr(10), 0, m.start()) + 1}: `{code}`"
        ref = _REPO_PATH.match(code)
        if ref is not None:
            rel = ref["path"]
            if not any(ROOT.glob(rel.rstrip("/"))) and not (ROOT / rel).exists():
                problems.append(f"{where}: no such path")
            elif ref["node"] and ref["node"] not in _defined_tests().get(rel, frozenset()):
                problems.append(f"{where}: {rel} defines no {ref['node']}")
        elif _TEST_NAME.match(code) and code not in every_test:
            problems.append(f"{where}: no test of that name under tests/")
    return problems
