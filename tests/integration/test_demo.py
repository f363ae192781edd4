"""`make demo` (examples/demo.py) runs to the end: every job reaches a final state."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from pyriver_async import _localdb

ROOT = Path(__file__).resolve().parents[2]


async def test_demo_inserts_and_works_every_job() -> None:
    admin = await _localdb.admin_url()
    proc = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, str(ROOT / "examples" / "demo.py")],
        env={**os.environ, "DATABASE_URL": admin},
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert "All jobs finished" in out
    # The mix the demo promises: retries that succeed, a snooze, a scheduled job,
    # a discarded job and a unique duplicate.
    assert "demo_charge_card     attempt 1 -> retryable" in out
    assert "demo_charge_card     attempt 3 -> completed" in out
    assert "demo_wait_for_stock  attempt 1 -> available (snoozed" in out
    assert "demo_build_report    attempt 1 -> completed" in out
    assert "demo_import_feed     attempt 2 -> discarded" in out
    assert "second skipped as duplicate: True" in out
    assert "By state: {'completed': 9, 'discarded': 1}" in out
