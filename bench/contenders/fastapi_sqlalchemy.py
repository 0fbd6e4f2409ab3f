"""FastAPI with async SQLAlchemy 2 ORM (asyncpg driver), a session per request through a dependency,
pydantic models read from the ORM objects: the shape of the popular FastAPI templates."""

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException, Query
from pydantic import BaseModel, ConfigDict
from sqlalchemy import DateTime, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class UserRow(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str]
    name: Mapped[str]
    is_active: Mapped[bool]
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class User(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    email: str
    name: str
    is_active: bool
    created_at: datetime


def database_url() -> str:
    # postgresql://user@/db?host=/socket -> the same with SQLAlchemy's asyncpg dialect.
    return os.environ["DATABASE_URL"].replace("postgresql://", "postgresql+asyncpg://", 1)


size = int(os.environ["POOL_SIZE"])
engine = create_async_engine(database_url(), pool_size=size, max_overflow=0)
Session = async_sessionmaker(engine, expire_on_commit=False)


@asynccontextmanager
async def lifespan(app: FastAPI):
    yield
    await engine.dispose()


app = FastAPI(lifespan=lifespan)


async def get_session() -> AsyncIterator[AsyncSession]:
    async with Session() as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(get_session)]


@app.get("/users")
async def list_users(
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    after: Annotated[int, Query(ge=0)] = 0,
) -> list[User]:
    rows = await session.scalars(select(UserRow).where(UserRow.id > after).order_by(UserRow.id).limit(limit))
    return rows.all()


@app.get("/users/{user_id}")
async def get_user(session: SessionDep, user_id: int) -> User:
    user = await session.get(UserRow, user_id)
    if user is None:
        raise HTTPException(404, "not found")
    return user
