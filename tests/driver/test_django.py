"""Django's connection on its psycopg 3 backend, in a process of its own (Django's
settings are process-wide): the job commits with ``atomic()``, rolls back with it, and
outside ``atomic()`` (Django's autocommit) commits at once."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from urllib.parse import urlsplit

SCRIPT = """
import django
import psycopg
from django.conf import settings

settings.configure(DATABASES={{"default": {{
    "ENGINE": "django.db.backends.postgresql", "NAME": {name!r}, "USER": {user!r},
    "PASSWORD": {password!r}, "HOST": {host!r}, "PORT": {port!r},
}}}})
django.setup()
from django.db import connection, transaction

from pyriver_async import JobArgs
from pyriver_async.sync import insert, insert_many


class Item(JobArgs, kind="driver_django"):
    n: int


other = psycopg.connect({url!r}, autocommit=True)


def count():
    sql = "SELECT count(*) FROM river_job WHERE kind = 'driver_django'"
    return other.execute(sql).fetchone()[0]


class Rollback(Exception):
    pass


try:
    with transaction.atomic():
        insert(Item(n=1), conn=connection)
        insert_many([Item(n=i) for i in range(100)], conn=connection)
        assert count() == 0
        raise Rollback
except Rollback:
    pass
assert count() == 0, count()
with transaction.atomic():
    res = insert(Item(n=2), conn=connection)
    assert count() == 0
assert count() == 1, count()
insert(Item(n=3), conn=connection)  # outside atomic(): Django's autocommit
assert count() == 2, count()
print("ok", res.job.id)
"""


def test_django_connection_joins_atomic_and_autocommits_outside(db: str) -> None:
    u = urlsplit(db)
    script = SCRIPT.format(
        name=u.path.lstrip("/"),
        user=u.username or "",
        password=u.password or "",
        host=u.hostname or "",
        port=str(u.port or ""),
        url=db,
    )
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.startswith("ok ")
