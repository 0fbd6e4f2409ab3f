"""The accounts plugin of the settings (verification and password reset links), the same in the web app and the
worker, and where the mail's templates are."""

from pathlib import Path

from heaven_plugins.signin import Accounts, Throttle

from .settings import Settings

# The mail's subjects and bodies: <name>.subject.txt, <name>.txt and <name>.html, rendered with Jinja.
TEMPLATES = Path(__file__).with_name("mail")


def accounts(settings: Settings) -> Accounts:
    """Links to PUBLIC_URL's pages, living VERIFY_TTL and RESET_TTL seconds; resets counted per email and address."""
    resets = Throttle(settings.reset_limit, 20 * settings.reset_limit, settings.sign_in_window)
    return Accounts(settings.public_url, verify_ttl=settings.verify_ttl, reset_ttl=settings.reset_ttl, throttle=resets)
