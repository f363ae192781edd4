"""FastAPI + SQLAlchemy (async): a row and its job, in one transaction.

``POST /signups`` writes a ``User`` with the request's session and enqueues a
``WelcomeEmail`` job in the same transaction: they commit together, or, when the
handler fails, neither exists. Workers (another process: ``pyriver worker ...``) see
the job only once the user is committed.

    pip install 'pyriver-async[sqlalchemy]' fastapi uvicorn asyncpg
    DATABASE_URL=postgresql://... uvicorn examples.fastapi_sqlalchemy:app

The job tables come from ``pyriver migrate up``; the example creates its own table.
"""

# No `from __future__ import annotations`: FastAPI reads the handler's annotations,
# and the dependency they name is local to create_app.
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

import pydantic
from fastapi import Depends, FastAPI, HTTPException
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from pyriver_async import Client, JobArgs


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "example_users"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(unique=True)


class WelcomeEmail(JobArgs, kind="example_welcome_email"):
    user_id: int


class Signup(pydantic.BaseModel):
    email: str
    referred_by: int | None = None


def create_app(database_url: str) -> FastAPI:
    # SQLAlchemy on asyncpg here; "postgresql+psycopg://" works the same.
    engine = create_async_engine(database_url.replace("postgresql://", "postgresql+asyncpg://"))
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    jobs = Client(database_url)  # insert-only: with conn= it inserts on the session's connection

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)
        yield
        await jobs.close()
        await engine.dispose()

    async def session() -> AsyncIterator[AsyncSession]:
        """One transaction per request: committed after the handler, rolled back if it fails."""
        async with sessions() as s, s.begin():
            yield s

    app = FastAPI(lifespan=lifespan)

    @app.post("/signups", status_code=201)
    async def signup(body: Signup, s: Annotated[AsyncSession, Depends(session)]) -> dict[str, int]:
        user = User(email=body.email)
        s.add(user)
        await s.flush()  # the INSERT, for the user's id
        inserted = await jobs.insert(WelcomeEmail(user_id=user.id), conn=s)
        # A failure after both writes (an unknown referrer) rolls both back.
        if body.referred_by is not None and await s.get(User, body.referred_by) is None:
            raise HTTPException(404, f"no user {body.referred_by} to refer anyone")
        return {"user_id": user.id, "job_id": inserted.job.id}

    return app


app = create_app(os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"))
