"""Sign-in: passwords hashed with argon2id, signed bearer tokens, revocation across processes, and a throttle on
failed sign-ins, on the project's `users` table.

`app.plugin(Auth(secrets, ...))`, after the Postgres plugin and before the routes it guards, adds:

- the guard: every route registered after it needs `Authorization: Bearer <token>` (401 without a
  valid one) unless its handler is marked `@public`; one marked `@admin` needs an admin's token (403);
- the routes POST /auth/token (sign in) and DELETE /auth/token (sign out);
- on every request's context, the plugin as `AUTH` and, on a guarded route, who signed in as `USER`
  (a `Principal`);
- at startup, the secret checked, the password threads opened and the revocations read, then read
  every second until shutdown, which stops that and closes the threads;
- the answers to its refusals: `PasswordsBusy` is a 503 and `TooManyAttempts` a 429, each with
  `Retry-After`.

The project's `users` table has `id`, `email` and `is_active`; sign-in's migrations (MIGRATIONS) add
`password_hash` and `is_admin` to it, triggers that void a user's tokens when they change, and tables of
their own (revoked tokens, token cutoffs, failure counts), then `is_verified` and the links' tokens
(0005). They are applied in name order with the project's own (heaven_plugins.migrate).

`app.plugin(Accounts(public_url, ...))`, after Auth, adds the links that verify an address, reset a password
and change the address (accounts.py): POST /auth/verify and /auth/verify/resend, POST /auth/password-reset and
its /complete, POST /auth/email-change and its /complete; the mail goes through the jobs and mail plugins, and
the worker's handlers of its jobs come from `accounts.register(worker)`.
"""

from pathlib import Path

from .accounts import RESEND_JOB, RESET_JOB, Accounts
from .guard import Guard, admin, client_address
from .keys import ACCOUNTS, AUTH, USER
from .passwords import Password, Passwords, PasswordsBusy
from .plugin import Auth
from .throttle import DELETE_ACCOUNT_COUNT, DELETE_PAIR_COUNTS, Throttle, TooManyAttempts
from .tokens import VOID_USER_TOKENS, Principal, Tokens

# Sign-in's migrations, applied with the project's, in name order (migrate.py).
MIGRATIONS = Path(__file__).with_name("migrations")

__all__ = [
    "ACCOUNTS",
    "AUTH",
    "DELETE_ACCOUNT_COUNT",
    "DELETE_PAIR_COUNTS",
    "MIGRATIONS",
    "RESEND_JOB",
    "RESET_JOB",
    "USER",
    "VOID_USER_TOKENS",
    "Accounts",
    "Auth",
    "Guard",
    "Password",
    "Passwords",
    "PasswordsBusy",
    "Principal",
    "Throttle",
    "Tokens",
    "TooManyAttempts",
    "admin",
    "client_address",
]
