"""A bare ASGI callable, asyncpg and msgspec, no framework, no validation, no error handling; its pool resets each
connection given back, as asyncpg does by default (floor.py: the same without that round trip)."""

import os
from datetime import datetime
from urllib.parse import parse_qsl

import asyncpg
import msgspec

SELECT_USERS = "SELECT id, email, name, is_active, created_at FROM users WHERE id > $1 ORDER BY id LIMIT $2"
SELECT_USER = "SELECT id, email, name, is_active, created_at FROM users WHERE id = $1"
HEADERS = [(b"content-type", b"application/json")]
encode = msgspec.json.Encoder().encode


class User(msgspec.Struct):
    id: int
    email: str
    name: str
    is_active: bool
    created_at: datetime


def make(connection_class: type[asyncpg.Connection] = asyncpg.Connection):
    """The app, its pool's connections of `connection_class`."""
    pool: asyncpg.Pool | None = None

    async def app(scope, receive, send):
        nonlocal pool
        if scope["type"] == "lifespan":
            await receive()
            size = int(os.environ["POOL_SIZE"])
            pool = await asyncpg.create_pool(
                os.environ["DATABASE_URL"], min_size=size, max_size=size, connection_class=connection_class
            )
            await send({"type": "lifespan.startup.complete"})
            await receive()
            await pool.close()
            await send({"type": "lifespan.shutdown.complete"})
            return
        path = scope["path"]
        if path == "/users":
            query = dict(parse_qsl(scope["query_string"].decode("latin-1")))
            rows = await pool.fetch(SELECT_USERS, int(query.get("after", 0)), int(query.get("limit", 20)))
            status, body = 200, encode([User(*row) for row in rows])
        elif path.startswith("/users/"):
            row = await pool.fetchrow(SELECT_USER, int(path[7:]))
            status, body = (200, encode(User(*row))) if row else (404, b'{"error":"not_found"}')
        else:
            status, body = 404, b'{"error":"not_found"}'
        await send({"type": "http.response.start", "status": status, "headers": HEADERS})
        await send({"type": "http.response.body", "body": body})

    return app


app = make()
