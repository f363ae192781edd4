"""The built wheel carries its migrations: `pyriver migrate up` works outside the repository."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import zipfile
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    # --no-isolation: build with the hatchling of this environment (no download).
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out)],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=300,
    )
    (whl,) = out.glob("pyriver_async-*.whl")
    return whl


def test_wheel_contains_every_migration_and_py_typed(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for sql in (ROOT / "migrations").rglob("*.sql"):
        rel = sql.relative_to(ROOT / "migrations").as_posix()
        assert f"pyriver_async/_migrations/{rel}" in names, rel
    assert "pyriver_async/py.typed" in names
    for area in ("job", "queue", "leader", "client", "pg", "migration"):
        assert f"pyriver_async/_driver/sql/{area}.sql" in names


async def test_installed_wheel_migrates_a_database_from_outside_the_repo(
    wheel: Path, tmp_path: Path, fresh_database: Callable[[], Awaitable[str]]
) -> None:
    target = tmp_path / "site"
    await asyncio.to_thread(
        subprocess.run,
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--target",
            str(target),
            str(wheel),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    url = await fresh_database()
    env = {**os.environ, "PYTHONPATH": str(target), "DATABASE_URL": url}
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    for args in (["migrate", "up"], ["migrate", "validate"]):
        proc = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "pyriver_async.cli", *args],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
    # It ran the installed copy, not the checkout.
    found = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", "import pyriver_async; print(pyriver_async.__file__)"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    where = found.stdout
    assert str(target) in where
    conn = await asyncpg.connect(url)
    try:
        versions = await conn.fetch("SELECT line, version FROM river_migration ORDER BY 1, 2")
    finally:
        await conn.close()
    assert [(r["line"], r["version"]) for r in versions] == [
        *(("main", v) for v in range(1, 9)),
        ("pyriver", 1),
        ("pyriver", 2),
        ("pyriver", 3),
    ]
