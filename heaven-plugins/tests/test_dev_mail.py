"""What dev's banner says of mail: where it goes, whether anything answers there, and Mailpit's inbox when it is
compose's. (The worker dev runs in its own process is tested through a bake's real dev server, in the template's
tests/test_dev.py.)"""

import socket

from heaven_plugins.dev import MAILPIT_INBOX, where_mail_goes
from heaven_plugins.mail import Mailer


def test_the_mail_line_says_where_mail_goes_and_whether_it_is_up(smtp):
    _, port = smtp
    assert where_mail_goes(Mailer("127.0.0.1", port, "a@example.com"), "the worker") == (
        f"SMTP 127.0.0.1:{port}, sent by the worker"
    )
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    down = where_mail_goes(Mailer("127.0.0.1", closed, "a@example.com"), "the worker")
    assert down == f"SMTP 127.0.0.1:{closed}, sent by the worker (nothing answers there now)"
    # compose's Mailpit, published on loopback: its inbox, and how to start it when it is not up.
    mailpit = where_mail_goes(Mailer("localhost", 1025, "a@example.com"), "the worker")
    assert mailpit.startswith(f"SMTP localhost:1025, sent by the worker; Mailpit shows it on {MAILPIT_INBOX}")
    # No SMTP host: what the mail jobs then do (aiosmtplib cannot connect to "", so each is tried, then held).
    assert where_mail_goes(Mailer("", 25, "a@example.com"), "the worker").startswith("none sent: SMTP_HOST is empty")
