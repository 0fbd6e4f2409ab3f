"""Users: the shapes, the SQL and the handlers of /users."""

from datetime import datetime

import asyncpg
import msgspec
from msgspec import UNSET, Struct, UnsetType

from .docs import Error, documented
from .postgres import DB
from .resources import Email, Name, Page, normal_email, not_found, path_id
from .web import HTTPError, read, read_query, send


class User(Struct):
    """A user, as every route answers it."""

    id: int
    email: str
    name: str
    is_active: bool
    created_at: datetime


class NewUser(Struct, forbid_unknown_fields=True):
    """The body of POST /users."""

    email: Email
    name: Name
    is_active: bool = True

    def __post_init__(self) -> None:
        self.email = normal_email(self.email)


class UserPatch(Struct, forbid_unknown_fields=True):
    """The body of PATCH /users/:id: the fields to change."""

    email: Email | UnsetType = UNSET
    name: Name | UnsetType = UNSET
    is_active: bool | UnsetType = UNSET

    def __post_init__(self) -> None:
        if self.email is not UNSET:
            self.email = normal_email(self.email)


decode_new_user = msgspec.json.Decoder(NewUser).decode
decode_user_patch = msgspec.json.Decoder(UserPatch).decode

COLUMNS = "id, email, name, is_active, created_at"
SELECT_USERS = f"SELECT {COLUMNS} FROM users WHERE id > $1 ORDER BY id LIMIT $2"
SELECT_USER = f"SELECT {COLUMNS} FROM users WHERE id = $1"
INSERT_USER = f"INSERT INTO users (email, name, is_active) VALUES ($1, $2, $3) RETURNING {COLUMNS}"
# COALESCE keeps a column a patch leaves out (None); no column here may be set to NULL.
UPDATE_USER = f"""
UPDATE users SET email = COALESCE($2, email), name = COALESCE($3, name), is_active = COALESCE($4, is_active)
WHERE id = $1 RETURNING {COLUMNS}
"""
DELETE_USER = "DELETE FROM users WHERE id = $1"


@documented(query=Page, responses={200: list[User], 422: Error})
async def list_users(req, res, ctx):
    """Users in id order, a page at a time: pass the last id you saw as `after` for the next page."""
    page = read_query(req, Page)
    send(res, await ctx.peek(DB).fetch(SELECT_USERS, page.after, page.limit, bind=User))


@documented(responses={200: User, 404: Error})
async def get_user(req, res, ctx):
    """One user by id."""
    user = await ctx.peek(DB).fetchrow(SELECT_USER, _user_id(req), bind=User)
    if user is None:
        raise _missing(req)
    send(res, user)


@documented(body=NewUser, responses={201: User, 400: Error, 409: Error, 413: Error, 422: Error})
async def create_user(req, res, ctx):
    """Create a user: 201 with the user, 409 if the email is taken."""
    new = read(req, decode_new_user)
    try:
        user = await ctx.peek(DB).fetchrow(INSERT_USER, new.email, new.name, new.is_active, bind=User)
    except asyncpg.UniqueViolationError:
        raise _taken(new.email) from None
    res.headers = "Location", f"/users/{user.id}"
    send(res, user, 201)


@documented(body=UserPatch, responses={200: User, 400: Error, 404: Error, 409: Error, 413: Error, 422: Error})
async def update_user(req, res, ctx):
    """Change the fields given, leave the rest."""
    user_id = _user_id(req)
    patch = read(req, decode_user_patch)
    values = [None if value is UNSET else value for value in (patch.email, patch.name, patch.is_active)]
    try:
        user = await ctx.peek(DB).fetchrow(UPDATE_USER, user_id, *values, bind=User)
    except asyncpg.UniqueViolationError:
        raise _taken(patch.email) from None
    if user is None:
        raise _missing(req)
    send(res, user)


@documented(responses={204: None, 404: Error})
async def delete_user(req, res, ctx):
    """Delete a user: 204, or 404 if there was none."""
    if await ctx.peek(DB).execute(DELETE_USER, _user_id(req)) == "DELETE 0":
        raise _missing(req)
    res.status = 204
    res.body = b""


def install(app) -> None:
    """Register the /users routes on `app`."""
    app.GET("/users", list_users)
    app.POST("/users", create_user)
    app.GET("/users/:id", get_user)
    app.PATCH("/users/:id", update_user)
    app.DELETE("/users/:id", delete_user)


def _user_id(req) -> int:
    return path_id(req, "user")


def _missing(req) -> HTTPError:
    return not_found("user", req.params["id"])


def _taken(email: str) -> HTTPError:
    return HTTPError(409, "conflict", f"a user with email {email!r} already exists", "email")
