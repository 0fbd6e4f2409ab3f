"""Admins: `python -m <package>.admin EMAIL` makes that user an admin, creating them if needed.

    python -m {{ cookiecutter.package_name }}.admin you@example.com

The password is read from standard input (`... < file`, or piped), or asked for twice on a
terminal; it is never an argument, which other users of the machine could read. There is no
default admin and no default password: this command is the only way to make the first admin.
`--revoke` takes the role away instead (no password needed), and `--unlock` lets a user locked
out by failed sign-ins (429) sign in again at once, from anywhere (no password needed either).
"""

import argparse
import asyncio
import getpass
import sys

import asyncpg
import msgspec
from heaven_plugins.fields import normal_email
from heaven_plugins.migrate import connect
from heaven_plugins.signin import DELETE_ACCOUNT_COUNT, DELETE_PAIR_COUNTS, VOID_USER_TOKENS, Passwords

from .settings import Settings
from .users import NewUser

SELECT_USER_FOR_UPDATE = "SELECT id FROM users WHERE lower(email) = lower($1) FOR UPDATE"
INSERT_ADMIN = "INSERT INTO users (email, name, password_hash, is_admin) VALUES ($1, $2, $3, true) RETURNING id"
# Becoming an admin voids the user's tokens (the trigger on is_admin), as a new password does.
PROMOTE = "UPDATE users SET password_hash = $2, is_admin = true, is_active = true WHERE id = $1"
DEMOTE = "UPDATE users SET is_admin = false WHERE lower(email) = lower($1)"


async def grant(conn: asyncpg.Connection, user: NewUser, password_hash: str) -> bool:
    """Make `user.email` an admin with this password hash, creating the user if there is none;
    returns whether it was created."""
    async with conn.transaction():
        user_id = await conn.fetchval(SELECT_USER_FOR_UPDATE, user.email)
        if user_id is None:
            await conn.fetchval(INSERT_ADMIN, user.email, user.name, password_hash)
            return True
        await conn.execute(PROMOTE, user_id, password_hash)
        await conn.execute(VOID_USER_TOKENS, user_id)
        return False


async def revoke(conn: asyncpg.Connection, email: str) -> bool:
    """Take the admin role from `email`; returns whether there was such a user."""
    return await conn.execute(DEMOTE, email) != "UPDATE 0"


async def unlock(conn: asyncpg.Connection, email: str) -> bool:
    """Forget the failed sign-ins counted against `email`'s account from every address; returns
    whether there were any."""
    async with conn.transaction():  # its own count first, then per address: the order sign-ins lock them in
        return await conn.fetchval(DELETE_ACCOUNT_COUNT, email) + await conn.fetchval(DELETE_PAIR_COUNTS, email) > 0


def read_password() -> str:
    """The password from a terminal (asked twice) or, when piped, the first line of standard input."""
    if sys.stdin.isatty():
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            raise SystemExit("The passwords differ; nothing changed.")
        return password
    return sys.stdin.readline().rstrip("\r\n")


async def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("email")
    parser.add_argument("--name", help="the name of a user created now (default: the part of EMAIL before @)")
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--revoke", action="store_true", help="take the admin role away instead")
    what.add_argument("--unlock", action="store_true", help="let EMAIL sign in again after too many failed sign-ins")
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    if args.revoke or args.unlock:
        user, password_hash = None, None
    else:
        fields = {"email": args.email, "name": args.name or args.email.partition("@")[0], "password": read_password()}
        try:  # the rules of sign-up: a valid email and name, a password of 8 to 256 characters
            user = msgspec.convert(fields, NewUser)
        except msgspec.ValidationError as exc:
            raise SystemExit(f"Not changed: {exc}") from None
        password_hash = Passwords(settings.argon2_time_cost, settings.argon2_memory_kib).hash_now(user.password)
    conn = await connect(settings.database_url, settings.connect_timeout)
    try:
        if args.unlock:
            if not await unlock(conn, normal_email(args.email)):
                raise SystemExit(f"No failed sign-ins counted for {args.email}; nothing changed.")
            print(f"{args.email} may sign in again: its failed sign-ins are forgotten.")
        elif args.revoke:
            if not await revoke(conn, normal_email(args.email)):
                raise SystemExit(f"No user {args.email}; nothing changed.")
            print(f"{args.email} is no longer an admin.")
        else:
            created = await grant(conn, user, password_hash)
            print(f"{user.email} is an admin{' (a new user)' if created else ''}; their earlier tokens are void.")
    finally:
        await conn.close()


if __name__ == "__main__":
    asyncio.run(main())
