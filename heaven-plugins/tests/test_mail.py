"""Mail: templates rendered (HTML escaped, nothing left blank), and messages sent to a real SMTP server."""

from pathlib import Path

import aiosmtplib
import jinja2
import pytest

from heaven_plugins.mail import Mailer, Message, Templates, mask

TEMPLATES = Templates(Path(__file__).with_name("mail"))


def test_html_bodies_escape_what_they_are_given_and_text_bodies_do_not():
    message = TEMPLATES.render("verify", {"link": "http://x/verify?token=a&b", "email": "<o'neil>@x.org", "hours": 72})
    assert "<o'neil>@x.org" in message.text
    assert "&lt;o&#39;neil&gt;@x.org" in message.html
    assert 'href="http://x/verify?token=a&amp;b"' in message.html


def test_a_value_the_template_needs_and_did_not_get_is_an_error():
    with pytest.raises(jinja2.UndefinedError):
        TEMPLATES.render("verify", {"email": "a@example.com", "hours": 1})


async def test_a_message_reaches_the_server_with_both_bodies(smtp):
    mailbox, port = smtp
    mailbox.messages.clear()
    mailer = Mailer("127.0.0.1", port, "Example <noreply@example.com>", tls="none")
    with pytest.raises(ValueError):  # a header smuggled in through a subject is refused, not sent
        await mailer.send("someone@example.com", Message("Hello\nBcc: x@evil.example", "plain"))
    await mailer.send("someone@example.com", Message("Hello", "plain", "<p>html</p>"))
    (received,) = mailbox.to("someone@example.com")
    assert received["Subject"] == "Hello"
    assert received.get_body(("plain",)).get_content().strip() == "plain"
    assert received.get_body(("html",)).get_content().strip() == "<p>html</p>"


async def test_a_message_goes_to_its_one_address_whatever_the_header_would_read_in_it(smtp):
    # An address stored before the Email field refused a list in one (or written by psql): mailed to that one
    # string alone, never to each address a To header holding it would name.
    mailbox, port = smtp
    mailbox.messages.clear()
    mailbox.envelopes.clear()
    mailer = Mailer("127.0.0.1", port, "noreply@example.com", tls="none")
    await mailer.send("victim@example.com,postmaster", Message("s", "t"))
    # One RCPT TO, of that string (this server reads it up to the comma); from the header it had been two, the
    # second to postmaster.
    assert mailbox.envelopes == [["victim@example.com"]]


async def test_starttls_is_required_when_asked_for(smtp):
    _, port = smtp  # a server that offers no STARTTLS: the mail is not sent in the clear
    mailer = Mailer("127.0.0.1", port, "noreply@example.com", tls="starttls", timeout=5)
    with pytest.raises(aiosmtplib.SMTPException):
        await mailer.send("someone@example.com", Message("s", "t"))


def test_a_log_line_gives_an_address_masked():
    assert mask("someone@example.com") == "s***@example.com"
