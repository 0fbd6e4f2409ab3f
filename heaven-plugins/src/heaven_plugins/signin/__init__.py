"""Sign-in: passwords hashed with argon2id, signed bearer tokens, revocation across processes, and a
throttle on failed sign-ins, on the project's `users` table (its migrations add what sign-in keeps)."""

from pathlib import Path

from .passwords import Password, Passwords, PasswordsBusy
from .plugin import AUTH, DELETE_ACCOUNT_COUNT, DELETE_PAIR_COUNTS, USER, Auth, Throttle, admin, client_address
from .tokens import VOID_USER_TOKENS, Principal, Tokens

# Sign-in's migrations, applied with the project's, in name order (migrate.py).
MIGRATIONS = Path(__file__).with_name("migrations")

__all__ = [
    "AUTH",
    "DELETE_ACCOUNT_COUNT",
    "DELETE_PAIR_COUNTS",
    "MIGRATIONS",
    "USER",
    "VOID_USER_TOKENS",
    "Auth",
    "Password",
    "Passwords",
    "PasswordsBusy",
    "Principal",
    "Throttle",
    "Tokens",
    "admin",
    "client_address",
]
