"""The least a Heaven service can do: the same queries, with no plugin, no validation and no error handling."""

import os
from datetime import datetime

import asyncpg
import msgspec
from heaven import App

SELECT_USERS = "SELECT id, email, name, is_active, created_at FROM users WHERE id > $1 ORDER BY id LIMIT $2"
SELECT_USER = "SELECT id, email, name, is_active, created_at FROM users WHERE id = $1"
encode = msgspec.json.Encoder().encode
app = App()


class User(msgspec.Struct):
    id: int
    email: str
    name: str
    is_active: bool
    created_at: datetime


async def open_pool(app):
    size = int(os.environ["POOL_SIZE"])
    app.keep("pool", await asyncpg.create_pool(os.environ["DATABASE_URL"], min_size=size, max_size=size))


async def close_pool(app):
    await app.peek("pool").close()


async def list_users(req, res, ctx):
    query = req.queries
    rows = await req.app.peek("pool").fetch(SELECT_USERS, int(query.get("after", 0)), int(query.get("limit", 20)))
    res.headers = "Content-Type", "application/json"
    res.body = encode([User(*row) for row in rows])


async def get_user(req, res, ctx):
    row = await req.app.peek("pool").fetchrow(SELECT_USER, req.params["id"])
    res.headers = "Content-Type", "application/json"
    res.body = encode(User(*row))


app.ON("startup", open_pool)
app.ON("shutdown", close_pool)
app.GET("/users", list_users)
app.GET("/users/:id:int", get_user)
