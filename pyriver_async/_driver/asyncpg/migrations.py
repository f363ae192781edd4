"""The migrator's queries over asyncpg: reading and recording versions, the advisory
lock, running one migration file, and the catalog checks of the schema check."""

from __future__ import annotations

from collections.abc import Sequence

from ..._errors import MigrationError
from ..records import RecordedMigration
from ._base import Base

__all__ = ["MigrationQueries"]


class MigrationQueries(Base):
    __slots__ = ()

    async def migration_table_info(self) -> bool | None:
        q = self._queries.migration_table_info
        rec = await self._fetchrow(q, q.bind(schema=self._queries.schema))
        return None if rec is None else bool(rec["has_line"])

    async def migration_rows(self, *, has_line: bool) -> list[RecordedMigration]:
        q = self._queries.migration_rows if has_line else self._queries.migration_rows_main_only
        return [
            RecordedMigration(line=r["line"], version=int(r["version"]), created_at=r["created_at"])
            for r in await self._fetch(q, ())
        ]

    async def migration_run(
        self, *, script: str, line: str, version: int, up: bool, has_line: bool | None
    ) -> None:
        """Run ``script`` in its own transaction with the search path on the schema, then
        record (``up``) or forget the version; ``has_line`` is read again after the
        script, since main 001 creates the table and 005 adds its line column."""
        qs = self._queries
        async with self.session() as s, s.transaction():
            await s._execute(qs.migration_search_path, ())
            conn = s.connection
            assert conn is not None
            try:
                await conn.execute(script)
            except Exception as exc:
                raise s._error(exc)
            has_line = await s.migration_table_info()
            if up:
                if has_line:
                    q = qs.migration_record
                    await s._execute(q, q.bind(line=line, version=version))
                elif has_line is not None and line == "main":
                    q = qs.migration_record_main_only
                    await s._execute(q, q.bind(version=version))
                else:  # pragma: no cover - prevented by the planner
                    raise MigrationError(
                        f"cannot record {line} {version:03d}: river_migration is missing "
                        "or has no line column"
                    )
            elif has_line:
                q = qs.migration_forget
                await s._execute(q, q.bind(line=line, version=version))
            elif has_line is not None:
                q = qs.migration_forget_main_only
                await s._execute(q, q.bind(version=version))
            # else: main 001's down dropped the table, and the record with it.

    async def migration_lock(self, *, key: int) -> None:
        q = self._queries.migration_lock
        await self._execute(q, q.bind(key=key), timeout=None)

    async def migration_unlock(self, *, key: int) -> None:
        q = self._queries.migration_unlock
        await self._execute(q, q.bind(key=key))

    async def schema_ensure(self) -> None:
        # Checked first: CREATE SCHEMA IF NOT EXISTS needs the CREATE privilege on the
        # database even when the schema is already there.
        q = self._queries.schema_exists
        if await self._fetchrow(q, q.bind(schema=self._queries.schema)) is None:
            await self._execute(self._queries.schema_create, ())

    async def schema_columns(self, *, tables: Sequence[str]) -> set[tuple[str, str]]:
        q = self._queries.schema_columns
        rows = await self._fetch(q, q.bind(schema=self._queries.schema, tables=list(tables)))
        return {(r["table_name"], r["column_name"]) for r in rows}

    async def schema_indexes(self, *, names: Sequence[str]) -> set[str]:
        q = self._queries.schema_indexes
        rows = await self._fetch(q, q.bind(schema=self._queries.schema, names=list(names)))
        return {r["index_name"] for r in rows}
