"""The parts of Heaven the App builds on (web.py, docs.py, routes.py) that are not its documented API are there as in
Heaven 2.4; on a Heaven that changed one, these tests fail naming the version and what changed."""

import importlib
import inspect
from collections import deque

import heaven
import pytest

PIN = "heaven>=2.4.3,<2.5"


def changed(what: str) -> str:
    return (
        f"Heaven {heaven.__version__}: {what}. The App (web.py, docs.py) is written against Heaven 2.4, "
        f"hence {PIN} in pyproject.toml: adapt it to this version before widening the range."
    )


def internal(module: str, name: str):
    """`module.name`, or a failure saying that this Heaven has no such thing."""
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        pytest.fail(changed(f"{module}.{name} is gone"))


# What the App overrides or calls, with the parameters it passes or receives. An override must match
# exactly (Heaven calls it); a call needs its parameters first, in order; keywords need only exist.
SIGNATURES = [
    ("heaven.router", "Routes.xhooks", "self hookstore methodstore matched r w c before", "exactly"),
    ("heaven.router", "Routes.unmatched", "self scope method route w", "exactly"),
    ("heaven.router", "Routes.handle", "self scope receive send metadata application", "exactly"),
    ("heaven.router", "Router.abettor", "self method route handler", "first"),
    ("heaven.router", "_string_to_function_handler", "handler", "exactly"),
    ("heaven.router", "Router.discover", "self subdomain", "first"),
    ("heaven.router", "Router.__init__", "debug max_body_size", "among"),
    ("heaven.docs", "get_docs_html", "title version favicon json_path operations components sockets", "exactly"),
]


@pytest.mark.parametrize(("module", "name", "expected", "how"), SIGNATURES, ids=[s[1] for s in SIGNATURES])
def test_what_the_app_overrides_or_calls_keeps_its_parameters(module, name, expected, how):
    owner, _, attribute = name.rpartition(".")
    function = getattr(internal(module, owner), attribute, None) if owner else internal(module, attribute)
    if function is None:
        pytest.fail(changed(f"{name} is gone"))
    found, expected = list(inspect.signature(function).parameters), expected.split()
    fits = {
        "exactly": found == expected,
        "first": found[: len(expected)] == expected,
        "among": set(expected) <= set(found),
    }[how]
    if not fits:
        pytest.fail(changed(f"{name} takes ({', '.join(found)}); the App needs ({', '.join(expected)}) {how}"))


async def test_a_request_goes_through_the_default_engine_in_that_order():
    Routes = internal("heaven.router", "Routes")
    DEFAULT = internal("heaven.constants", "DEFAULT")
    calls = []

    class Recording(Routes):
        async def xhooks(self, hookstore, methodstore, matched, r, w, c, before=False):
            calls.append(f"xhooks(before={before})")
            await super().xhooks(hookstore, methodstore, matched, r, w, c, before)

        def unmatched(self, scope, method, route, w):
            calls.append(f"unmatched({route})")
            return super().unmatched(scope, method, route, w)

        async def buffer(self, r, receive, w, application):
            calls.append("buffer")
            return await super().buffer(r, receive, w, application)

        async def handle(self, scope, receive, send, metadata=None, application=None):
            # web.py reads the request id from metadata[1] (the decoded headers), the matched route from
            # the response's request, and a hook's exception from the response, all after the answer.
            calls.append(f"handle({metadata[1].get('x-request-id')})")
            w = await super().handle(scope, receive, send, metadata, application)
            error = getattr(w, "_unhandled_error", None)
            calls.append(f"answered({w._req._route}, {type(error).__name__})")
            if error is not None:
                del w._unhandled_error
                w.status = 500
            return w

    async def handler(req, res, ctx):
        calls.append("handler")
        res.body = b"{}"

    app = heaven.Router()
    if not isinstance(app.subdomains.get(DEFAULT), Routes):
        pytest.fail(changed(f"a Router's subdomains[{DEFAULT!r}] is no longer its Routes"))
    app.subdomains[DEFAULT] = Recording()

    def failing_hook(req, res, ctx):
        calls.append("hook")
        raise ValueError("hook failed")

    app.POST("/things", handler)
    app.GET("/hooked", handler)
    app.BEFORE("/hooked", failing_hook)
    try:
        statuses = [
            await asgi_request(app, "POST", "/things", b"{}"),
            await asgi_request(app, "GET", "/nothing"),
            await asgi_request(app, "GET", "/hooked"),
        ]
    except Exception as exc:
        pytest.fail(changed(f"a request through a Routes subclass raised {exc!r}, after the calls {calls}"))
    expected = [
        *["handle(abc-1)", "buffer", "xhooks(before=True)", "handler", "xhooks(before=False)"],
        *["answered(/things, NoneType)", "handle(abc-1)", "unmatched(/nothing)", "answered(None, NoneType)"],
        *["handle(abc-1)", "buffer", "xhooks(before=True)", "hook", "answered(/hooked, ValueError)"],
    ]
    if calls != expected or statuses != [200, 404, 500]:
        pytest.fail(changed(f"three requests made the calls {calls} and answered {statuses}, not {expected}"))


def test_every_route_is_registered_through_abettor():
    seen = []

    class Recording(heaven.Router):
        def abettor(self, method, route, handler, *args, **kwargs):
            seen.append(method)
            return super().abettor(method, route, handler, *args, **kwargs)

    app = Recording()
    for method in ("GET", "POST", "PUT", "PATCH", "DELETE"):
        getattr(app, method)("/things", lambda req, res, ctx: None)
    if seen != ["GET", "POST", "PUT", "PATCH", "DELETE"]:
        pytest.fail(changed(f"registering GET, POST, PUT, PATCH and DELETE routes called abettor for {seen}"))


async def test_startup_and_shutdown_hooks_and_daemons_are_calls_taking_the_app():
    app = heaven.Router()
    seen = []

    async def shutdown(a):
        seen.append(("shutdown", a))

    app.ON("startup", lambda a: seen.append(("startup", a)))
    app.ON("shutdown", shutdown)
    app.daemons = lambda a: seen.append(("daemon", a))  # returns None: runs once
    for name in ("initializers", "deinitializers"):
        hooks = getattr(app, name, None)
        if not isinstance(hooks, deque) or len(hooks) != 1:
            pytest.fail(changed(f"Router.{name} is {hooks!r}, not a deque of the hooks added with ON()"))
    if not isinstance(app.daemons, list) or len(app.daemons) != 1:
        pytest.fail(changed(f"Router.daemons is {app.daemons!r}, not a list of what `app.daemons = fn` added"))
    for hook in (app.initializers.popleft(), app.deinitializers.popleft(), app.daemons[0]):
        await hook(app)
    if seen != [("startup", app), ("shutdown", app), ("daemon", app)]:
        pytest.fail(changed(f"awaiting each hook with the app made {seen}"))


def test_a_context_is_its_app_and_a_dict_of_what_it_keeps():
    # routes.py makes each request's Context without calling Context.__init__, setting these two.
    Context, Key = internal("heaven.context", "Context"), internal("heaven.context", "Key")
    app = heaven.Router()
    ctx = Context(app)
    made = repr(vars(ctx))
    fresh = vars(ctx) == {"_application": app, "_data": {}}
    ctx.keep("db", 1)
    ctx.keep(Key("user"), 2)
    if not fresh or ctx._data != {"db": 1, "user": 2} or ctx.db != 1:
        pytest.fail(changed(f"a Context is {made}, and keeping two values made it {vars(ctx)}"))


def test_discover_lists_each_route_with_what_the_docs_read():
    DEFAULT = internal("heaven.constants", "DEFAULT")

    async def get_thing(req, res, ctx):
        """One thing."""

    app = heaven.Router()
    app.GET("/things/:id:int", get_thing)
    app.GET("/hidden", get_thing, docs=False)
    entries = {entry.get("route"): entry for entry in app.discover(DEFAULT)}
    needed = {"method", "route", "handler", "handler_name", "docstring", "group", "documented"}
    entry = entries.get("/things/:id:int", {})
    if not needed <= entry.keys() or entry["handler"] is not get_thing or entries["/hidden"]["documented"]:
        pytest.fail(changed(f"Router.discover() lists a route as {entry}; docs.py reads {sorted(needed)}"))


def test_the_docs_page_renders_from_what_docs_passes():
    get_docs_html = internal("heaven.docs", "get_docs_html")
    page = get_docs_html("Title of the page", "1.0", None, "/docs/openapi.json", [], {"schemas": {}}, [])
    if not isinstance(page, str) or "Title of the page" not in page:
        pytest.fail(changed("heaven.docs.get_docs_html no longer renders a page from docs.py's arguments"))


async def asgi_request(app, method: str, path: str, body: bytes = b"") -> int:
    """Call `app` as a server would, once; the status it answered."""
    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [
            (b"host", b"127.0.0.1:8000"),
            (b"content-length", str(len(body)).encode()),
            (b"x-request-id", b"abc-1"),
        ],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8000),
    }
    sent = []

    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message):
        sent.append(message)

    await app(scope, receive, send)
    return sent[0]["status"]
