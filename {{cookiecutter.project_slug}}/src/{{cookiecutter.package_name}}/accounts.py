"""The accounts plugin of the settings (verification and password reset links), the same in the web app and the
worker, and where the mail's templates are."""

from pathlib import Path

from heaven_plugins.signin import Accounts, Throttle

from .settings import Settings

# The mail's subjects and bodies: <name>.subject.txt, <name>.txt and <name>.html, rendered with Jinja.
TEMPLATES = Path(__file__).with_name("mail")


def accounts(settings: Settings) -> Accounts:
    """Links to PUBLIC_URL's pages, living VERIFY_TTL, RESET_TTL and CHANGE_TTL seconds; requests for them counted
    per email (per user for address changes) and client address; at most 10 of a kind mailed to one address in
    each SIGN_IN_WINDOW, whoever asks (the library's default mail_limit)."""
    requests = Throttle(settings.reset_limit, 20 * settings.reset_limit, settings.sign_in_window)
    ttls = {"verify_ttl": settings.verify_ttl, "reset_ttl": settings.reset_ttl, "change_ttl": settings.change_ttl}
    return Accounts(settings.public_url, **ttls, throttle=requests)
