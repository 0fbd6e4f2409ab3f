"""FastAPI with a typed response model: asyncpg for the queries, pydantic for validation and JSON."""

import os
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated

import asyncpg
from fastapi import FastAPI, HTTPException, Query, Request
from pydantic import BaseModel

SELECT_USERS = "SELECT id, email, name, is_active, created_at FROM users WHERE id > $1 ORDER BY id LIMIT $2"
SELECT_USER = "SELECT id, email, name, is_active, created_at FROM users WHERE id = $1"


class User(BaseModel):
    id: int
    email: str
    name: str
    is_active: bool
    created_at: datetime


@asynccontextmanager
async def lifespan(app: FastAPI):
    size = int(os.environ["POOL_SIZE"])
    async with asyncpg.create_pool(os.environ["DATABASE_URL"], min_size=size, max_size=size) as pool:
        app.state.pool = pool
        yield


app = FastAPI(lifespan=lifespan)


@app.get("/users")
async def list_users(
    request: Request,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    after: Annotated[int, Query(ge=0)] = 0,
) -> list[User]:
    rows = await request.app.state.pool.fetch(SELECT_USERS, after, limit)
    return [User(**row) for row in rows]


@app.get("/users/{user_id}")
async def get_user(request: Request, user_id: int) -> User:
    row = await request.app.state.pool.fetchrow(SELECT_USER, user_id)
    if row is None:
        raise HTTPException(404, "not found")
    return User(**row)
