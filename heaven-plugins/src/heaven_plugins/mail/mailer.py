"""Sending a message over SMTP with aiosmtplib: the server, its TLS, the credentials and the sender are settings."""

import logging
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Literal

import aiosmtplib

from .templates import Message

log = logging.getLogger(__name__)

TLS = Literal["none", "starttls", "tls"]


def mask(address: str) -> str:
    """An address as a log line gives it: enough to tell whose it was, not the whole of it."""
    local, _, domain = address.rpartition("@")
    return f"{local[:1]}***@{domain}"


class Mailer:
    """An SMTP server and who mail comes from. `tls`: "starttls" (port 587: upgrade the connection, and refuse a
    server that cannot), "tls" (port 465: TLS from the start), or "none" (a server on this machine or in
    this compose project, such as Mailpit). Every step waits at most `timeout` seconds."""

    def __init__(
        self,
        host: str,
        port: int,
        sender: str,
        *,
        tls: TLS = "starttls",
        username: str = "",
        password: str = "",
        timeout: float = 10.0,
    ) -> None:
        if tls not in ("none", "starttls", "tls"):
            raise ValueError(f"tls is {tls!r}, not none, starttls or tls")
        self.host, self.port, self.sender, self.tls = host, port, sender, tls
        self._username, self._password, self.timeout = username, password, timeout

    async def send(self, to: str, message: Message) -> None:
        """Send `message` to `to`; raises aiosmtplib's errors (the worker tries again later)."""
        email = EmailMessage()
        email["From"] = self.sender
        email["To"] = to
        email["Subject"] = message.subject
        email["Date"] = formatdate(localtime=False)
        email["Message-ID"] = make_msgid(domain=self.sender.rpartition("@")[2].strip(">") or None)
        email.set_content(message.text)
        if message.html is not None:
            email.add_alternative(message.html, subtype="html")
        await aiosmtplib.send(
            email,
            # The envelope's one recipient, given: taken from the To header, an address holding a comma would be
            # sent to each address the header names.
            recipients=[to],
            hostname=self.host,
            port=self.port,
            username=self._username or None,
            password=self._password or None,
            use_tls=self.tls == "tls",
            start_tls=self.tls == "starttls",
            timeout=self.timeout,
        )
        # Never the subject or the body: they may carry a link with a token in it.
        log.info("mail sent to %s through %s:%s", mask(to), self.host, self.port)
