"""What sign-in keeps on every request's context: who signed in, and the plugin itself."""

from typing import TYPE_CHECKING

from heaven.context import Key

from .tokens import Principal

if TYPE_CHECKING:
    from .accounts import Accounts
    from .plugin import Auth

# Who signed in, on the context of every request a token let through: `ctx.peek(USER)`.
USER: Key[Principal] = Key("user")
# The plugin itself, on every request's context: `ctx.peek(AUTH)`.
AUTH: Key["Auth"] = Key("auth")
# The accounts plugin (verification and reset links), on every request's context: `ctx.peek(ACCOUNTS)`.
ACCOUNTS: Key["Accounts"] = Key("accounts")
