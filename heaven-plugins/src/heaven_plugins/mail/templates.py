"""A project's mail templates: a subject, a plain-text body and an optional HTML body per message, rendered with
Jinja."""

from pathlib import Path
from typing import Any

import jinja2
from msgspec import Struct


class Message(Struct, frozen=True):
    """A rendered message, ready to send."""

    subject: str
    text: str
    html: str | None = None


class Templates:
    """The templates of `directory`: `render(name, values)` reads `<name>.subject.txt`, `<name>.txt` and, if
    there is one, `<name>.html`. A value a template names but `values` lacks is an error, not an empty string:
    a mail with a hole in it is not sent."""

    def __init__(self, directory: Path) -> None:
        # HTML bodies escape what they are given; subjects and plain text are not HTML.
        self._env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(directory),
            undefined=jinja2.StrictUndefined,
            autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default_for_string=False),
        )
        self.directory = directory

    def render(self, name: str, values: dict[str, Any]) -> Message:
        """The message `name` with `values` filled in."""
        subject = self._env.get_template(f"{name}.subject.txt").render(values)
        text = self._env.get_template(f"{name}.txt").render(values)
        html = None
        if (self.directory / f"{name}.html").exists():
            html = self._env.get_template(f"{name}.html").render(values)
        # A header is one line: a newline in a subject would start another header.
        return Message(" ".join(subject.split()), text, html)
