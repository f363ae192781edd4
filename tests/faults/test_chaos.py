"""The chaos matrix at CI size (benchmarks/chaos.py has the cells and their reading):
each fault on a throwaway cluster of its own, under load; no job lost, no outcome
recorded twice, no stale completion written. ``python -m benchmarks chaos`` runs the
same cells and prints the table; ``--size full`` runs them longer.

The README's Guarantees point here."""

from __future__ import annotations

import pytest

from benchmarks.chaos import CELLS, run_cell

pytestmark = [pytest.mark.faults, pytest.mark.chaos, pytest.mark.timeout(180)]


@pytest.mark.parametrize("cell", list(CELLS))
async def test_chaos_cell_loses_nothing_and_records_each_outcome_once(cell: str) -> None:
    res = await run_cell(cell, "ci")
    print(
        f"\n{cell}: inserted {res.inserted}, completed {res.completed}, twice {res.twice}, "
        f"stale {res.stale}, lost {res.lost}, recover {res.recover_s}, {res.seconds:.1f}s; "
        f"{res.note}"
    )
    assert res.error is None, res.error
    assert res.inserted > 0
    assert res.lost == 0, res.details
    assert res.twice == 0, res.details
    assert res.stale == 0, res.details
    assert res.recover_s is not None
