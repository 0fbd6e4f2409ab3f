"""The /docs page: Heaven's self-contained reference page for an OpenAPI document, with a success's own
example, `code` in descriptions, and signing in once for every later request."""

import json
import re
from typing import Any

from heaven.constants import DEFAULT
from heaven.docs import _example_value, _highlight_json, _highlighted_lines, get_docs_html
from markupsafe import Markup, escape

# The page's "Test Request" buttons send the headers of its "Headers" panel (kept in the tab's
# sessionStorage). Signing in there with POST /auth/token puts the token in that panel, so every
# later Test Request is signed in; DELETE /auth/token takes it out.
SIGN_IN_SCRIPT = """
(function () {
  var send = window.fetch;
  window.fetch = function (path, options) {
    var method = ((options && options.method) || 'GET').toUpperCase();
    return send.apply(this, arguments).then(function (response) {
      if (path !== '/auth/token' || !response.ok) return response;
      var headers = heavenGetHeaders();
      if (method === 'DELETE') { delete headers['Authorization']; heavenSetHeaders(headers); return response; }
      return response.clone().json().then(function (token) {
        headers['Authorization'] = 'Bearer ' + token.access_token;
        heavenSetHeaders(headers);
        return response;
      });
    });
  };
})();
"""


# Code spans in descriptions, which Heaven's page has no style for.
PAGE_STYLE = """
.op-description code { font-family: var(--mono); font-size: 0.9em; padding: 0 0.3em; border-radius: 4px;
  background: rgba(127, 127, 127, 0.15); }
"""


def page(document: dict[str, Any], json_route: str) -> str:
    """Heaven's reference page (inline CSS and JS, no CDN) for `document`, itself served at `json_route`:
    each operation's summary as its heading, its description below with `code` shown as code, and the
    example answer of its success status (201 a User, 204 no body), where Heaven shows a 200's."""
    operations = [
        {
            "method": method.upper(),
            "path": path,
            "route": path,
            "subdomain": DEFAULT,
            "group": operation["tags"][0],
            # Heaven escapes what it is given: a description rendered here is Markup, shown as is.
            "docstring": _markdown(operation.get("description", "")),
            "has_schema": True,
            "operation": {key: value for key, value in operation.items() if key != "description"},
        }
        for path, methods in document["paths"].items()
        for method, operation in methods.items()
    ]
    info = document["info"]
    html = get_docs_html(info["title"], info["version"], None, json_route, operations, document["components"], [])
    for index, view in enumerate(operations):
        html = _success_example(html, index, view["operation"]["responses"], document["components"])
    html = html.replace("</head>", f"<style>{PAGE_STYLE}</style></head>", 1)
    return html.replace("</body>", f"<script>{SIGN_IN_SCRIPT}</script></body>", 1)


def _success_example(html: str, index: int, responses: dict[str, dict], components: dict) -> str:
    # Heaven's card says "200" and shows a 200's body: an operation answering 201 or 204 gets its own.
    status = min((code for code in responses if code.startswith("2")), default="200")
    if status == "200":
        return html
    start = rf'id="op-{index}-response">'
    card = re.compile(rf'({start}.*?<span class="status-pill">)200(</span>)', re.DOTALL)
    html = card.sub(rf"\g<1>{status}\g<2>", html, count=1)
    content = responses[status].get("content")
    if not content:
        return html
    schema = content["application/json"]["schema"]
    example = json.dumps(_example_value(schema, components), indent=2)
    lines = "".join(
        f'<div class="code-line"><span class="line-no">{number}</span><span class="line-content">{line}</span></div>'
        for number, line in enumerate(_highlighted_lines(example, _highlight_json), 1)
    )
    body = re.compile(
        rf'({start}.*?<div class="code-body response-body">)\s*<div class="no-body">No Body</div>', re.DOTALL
    )
    return body.sub(lambda match: match.group(1) + lines, html, count=1)


def _markdown(text: str) -> Markup:
    # The one piece of Markdown the descriptions use: `code`. Everything else is shown as written.
    escaped = str(escape(text))
    return Markup(re.sub(r"`([^`]+)`", r"<code>\1</code>", escaped))  # noqa: S704 (escaped above)
