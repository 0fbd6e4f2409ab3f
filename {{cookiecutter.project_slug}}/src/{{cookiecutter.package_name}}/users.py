"""Users: the shapes, the SQL and the handlers of /users: sign-up, your own account, and the admins' routes."""

from datetime import datetime
from typing import Annotated

import msgspec
from heaven_plugins.docs import Error, documented
from heaven_plugins.fields import Email, Name, Page, normal_email, not_found, path_id
from heaven_plugins.signin import ACCOUNTS, AUTH, USER, VOID_USER_TOKENS, Password, admin, client_address
from heaven_plugins.web import HTTPError, public, read, read_query, send
from msgspec import UNSET, Meta, Struct, UnsetType

from .resources import DB


class User(Struct):
    """A user, as every route answers it."""

    id: int
    email: str
    name: str
    is_active: bool
    created_at: datetime


class Account(User):
    """Your own user, as /users/me answers it: also whether you showed you receive mail at its address."""

    is_verified: bool


class NewUser(Struct, forbid_unknown_fields=True):
    """The body of POST /users."""

    email: Email
    name: Name
    password: Password
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


class AccountPatch(Struct, forbid_unknown_fields=True):
    """The body of PATCH /users/me: the fields to change. A new password needs the current one. Not the
    email: a new address is confirmed from its mailbox (POST /auth/email-change), or a stolen token could
    move the account to an address its thief then resets the password from."""

    name: Name | UnsetType = UNSET
    password: Password | UnsetType = UNSET
    current_password: Annotated[str, Meta(max_length=256)] | UnsetType = UNSET


# The document says what the handler checks: a `password` comes with a `current_password` (JSON
# Schema's dependentRequired; msgspec keeps the schema and leaves the check to update_account).
AccountChange = Annotated[
    AccountPatch, Meta(extra_json_schema={"dependentRequired": {"password": ["current_password"]}})
]

decode_new_user = msgspec.json.Decoder(NewUser).decode
decode_user_patch = msgspec.json.Decoder(UserPatch).decode
decode_account_patch = msgspec.json.Decoder(AccountPatch).decode

COLUMNS = "id, email, name, is_active, created_at"
SELECT_USERS = f"SELECT {COLUMNS} FROM users WHERE id > $1 ORDER BY id LIMIT $2"
SELECT_USER = f"SELECT {COLUMNS} FROM users WHERE id = $1"
SELECT_ACCOUNT = f"SELECT {COLUMNS}, is_verified FROM users WHERE id = $1"
INSERT_USER = f"""
INSERT INTO users (email, name, is_active, password_hash) VALUES ($1, $2, $3, $4) RETURNING {COLUMNS}
"""
# COALESCE keeps a column a patch leaves out (None); no column here may be set to NULL.
UPDATE_USER = f"""
UPDATE users SET email = COALESCE($2, email), name = COALESCE($3, name), is_active = COALESCE($4, is_active)
WHERE id = $1 RETURNING {COLUMNS}
"""
UPDATE_ACCOUNT = f"""
UPDATE users SET name = COALESCE($2, name), password_hash = COALESCE($3, password_hash)
WHERE id = $1 RETURNING {COLUMNS}, is_verified
"""
# Deleting a user, like deactivating one, voids their tokens (a trigger, 0002_sign_in.sql).
DELETE_USER = "DELETE FROM users WHERE id = $1"


@admin
@documented(query=Page, responses={200: list[User], 422: Error})
async def list_users(req, res, ctx):
    """Users in id order, a page at a time: pass the last id you saw as `after` for the next page."""
    page = read_query(req, Page)
    # A replica may answer (DATABASE_REPLICA_URLS): never older than this client's own writes, nor than MAX_REPLICA_LAG.
    send(res, await ctx.peek(DB).replica(req).fetch(SELECT_USERS, page.after, page.limit, bind=User))


@admin
@documented(responses={200: User, 404: Error})
async def get_user(req, res, ctx):
    """One user by id."""
    user = await ctx.peek(DB).replica(req).fetchrow(SELECT_USER, _user_id(req), bind=User)
    if user is None:
        raise _missing(req)
    send(res, user)


@public
@documented(body=NewUser, responses={201: User, 400: Error, 409: Error, 413: Error, 422: Error})
async def create_user(req, res, ctx):
    """Sign up: 201 with the user, 409 if the email is taken. A link that verifies the address is mailed to it
    (POST /auth/verify). Then POST /auth/token to sign in."""
    new = read(req, decode_new_user)
    password_hash = await ctx.peek(AUTH).passwords.hash(new.password)
    # The user and the mail of their link: both or neither. A taken email is a unique violation, which the
    # Postgres plugin answers 409 naming the field.
    async with ctx.peek(DB).transaction() as tx:
        user = await tx.fetchrow(INSERT_USER, new.email, new.name, new.is_active, password_hash, bind=User)
        await ctx.peek(ACCOUNTS).send_verification(tx, user.id, user.email)
    res.headers = "Location", f"/users/{user.id}"
    send(res, user, 201)


@admin
@documented(body=UserPatch, responses={200: User, 400: Error, 404: Error, 409: Error, 413: Error, 422: Error})
async def update_user(req, res, ctx):
    """Change the fields given, leave the rest. Deactivating a user voids their tokens."""
    user_id = _user_id(req)
    patch = read(req, decode_user_patch)
    values = [None if value is UNSET else value for value in (patch.email, patch.name, patch.is_active)]
    user = await ctx.peek(DB).fetchrow(UPDATE_USER, user_id, *values, bind=User)
    if user is None:
        raise _missing(req)
    if patch.is_active is not UNSET:  # deactivated (or back): the trigger voided their tokens
        await ctx.peek(AUTH).revocations.refresh_user(ctx.peek(DB), user.id)
    send(res, user)


@admin
@documented(responses={204: None, 404: Error})
async def delete_user(req, res, ctx):
    """Delete a user: 204, or 404 if there was none. Their tokens stop working."""
    user_id = _user_id(req)
    if await ctx.peek(DB).execute(DELETE_USER, user_id) == "DELETE 0":
        raise _missing(req)
    await ctx.peek(AUTH).revocations.refresh_user(ctx.peek(DB), user_id)
    res.status = 204
    res.body = b""


@documented(responses={200: Account, 404: Error})
async def get_account(req, res, ctx):
    """Your own user: the one whose token this request carries, and whether its address is verified."""
    user = await ctx.peek(DB).fetchrow(SELECT_ACCOUNT, ctx.peek(USER).id, bind=Account)
    if user is None:
        raise _no_account()
    send(res, user)


@documented(
    body=AccountChange,
    responses={200: Account, 400: Error, 403: Error, 404: Error, 409: Error, 413: Error, 422: Error, 429: Error},
)
async def update_account(req, res, ctx):
    """Change your own name or password.

    A new `password` needs `current_password` (422 without it, 403 if it is wrong; wrong guesses
    count as failed sign-ins, and too many get 429 with `Retry-After`), and signs out every token of
    yours, this one included: sign in again with it. A new email is confirmed from its mailbox:
    `POST /auth/email-change` (an `email` here is 422).
    """
    user_id = ctx.peek(USER).id
    try:
        patch = read(req, decode_account_patch)
    except HTTPError as refused:
        if refused.field == "email":  # not a field here: say where it is changed
            detail = "a new email is confirmed from its mailbox: POST /auth/email-change"
            raise HTTPError(422, "invalid", detail, "email") from None
        raise
    db, password_hash = ctx.peek(DB), None
    if patch.password is not UNSET:
        if patch.current_password is UNSET:
            raise HTTPError(422, "invalid", "a new password needs current_password", "current_password")
        me = await db.fetchrow(SELECT_USER, user_id, bind=User)
        if me is None:
            raise _no_account()
        auth = ctx.peek(AUTH)
        if await auth.check_password(db, me.email, patch.current_password, client_address(req)) is None:
            raise HTTPError(403, "forbidden", "current_password is not your password", "current_password")
        password_hash = await auth.passwords.hash(patch.password)
    name = None if patch.name is UNSET else patch.name
    async with db.transaction() as tx:
        user = await tx.fetchrow(UPDATE_ACCOUNT, user_id, name, password_hash, bind=Account)
        if user is not None and password_hash is not None:
            await tx.execute(VOID_USER_TOKENS, user_id)
    if user is None:
        raise _no_account()
    if password_hash is not None:
        await ctx.peek(AUTH).revocations.refresh_user(db, user_id)
    send(res, user)


@documented(responses={204: None, 404: Error})
async def delete_account(req, res, ctx):
    """Delete your own user; every token of yours stops working."""
    user_id, db = ctx.peek(USER).id, ctx.peek(DB)
    if await db.execute(DELETE_USER, user_id) == "DELETE 0":
        raise _no_account()
    await ctx.peek(AUTH).revocations.refresh_user(db, user_id)
    res.status = 204
    res.body = b""


def install(app) -> None:
    """Register the /users routes on `app`."""
    app.GET("/users", list_users)
    app.POST("/users", create_user)
    app.GET("/users/me", get_account)
    app.PATCH("/users/me", update_account)
    app.DELETE("/users/me", delete_account)
    app.GET("/users/:id", get_user)
    app.PATCH("/users/:id", update_user)
    app.DELETE("/users/:id", delete_user)


def _user_id(req) -> int:
    return path_id(req, "user")


def _missing(req) -> HTTPError:
    return not_found("user", req.params["id"])


def _no_account() -> HTTPError:
    # Deleted a moment ago: its tokens stop working within a second or so.
    return HTTPError(404, "not_found", "the user of this token no longer exists")
