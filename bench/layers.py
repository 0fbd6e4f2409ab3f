"""What bench/profile.py runs under callgrind: each layer of the headline request N times in a row, with
os.getppid() as the marker before each loop and after the last (profile.py cuts the count there).

    python bench/layers.py    # under callgrind, as profile.py runs it
"""

import asyncio
import collections
import importlib
import os
import sys
from urllib.parse import parse_qsl

import instructions
import prepare

N = 1_000  # times each layer runs
PATH, QUERY = "/users", b"limit=20"
SELECT_USERS = "SELECT id, email, name, is_active, created_at FROM users WHERE id > $1 ORDER BY id LIMIT $2"


def layers() -> None:
    """What callgrind runs: each layer N times, a marker before each loop and after the last."""
    import uvloop

    uvloop.run(_layers())


async def _layers() -> None:
    from heaven.constants import DEFAULT
    from heaven.context import Context
    from heaven.request import Request
    from heaven.response import Response
    from heaven.router import _Probe
    from heaven.utils import preprocessor
    from heaven_plugins import app as app_module
    from heaven_plugins.fields import Page
    from heaven_plugins.logs import ids
    from heaven_plugins.logs.access_log import log_request
    from heaven_plugins.logs.writer import writer
    from heaven_plugins.postgres.rows import bind_rows
    from heaven_plugins.web import read_query, send

    sys.path.insert(0, str(prepare.BENCH / "contenders"))
    floor = importlib.import_module("floor").app
    service = importlib.import_module(f"{prepare.PACKAGE}.app").app
    user = importlib.import_module(f"{prepare.PACKAGE}.users").User
    headers = [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"bench")]
    headers.append((b"authorization", os.environ["BENCH_AUTHORIZATION"].encode()))

    def scope() -> dict:
        return instructions.request_scope(PATH, QUERY, headers, {})  # as instructions.py drives every contender

    statuses: collections.Counter = collections.Counter()

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def answer(message):
        if message["type"] == "http.response.start":
            statuses[message["status"]] += 1

    stops = []
    for app in (service, floor):
        inbox, outbox = asyncio.Queue(), asyncio.Queue()
        await inbox.put({"type": "lifespan.startup"})
        stops.append(asyncio.create_task(app({"type": "lifespan", "asgi": {"version": "3.0"}}, inbox.get, outbox.put)))
        started = await outbox.get()
        if started["type"] != "lifespan.startup.complete":
            raise SystemExit(f"startup failed: {started}")
        for _ in range(64):  # statements prepared, caches filled
            await app(scope(), receive, answer)
    if set(statuses) != {200}:
        raise SystemExit(f"answers were not all 200: {dict(statuses)}")

    engine = service.subdomains[DEFAULT]
    the_scope = scope()
    metadata = preprocessor(the_scope)
    req = Request(the_scope, b"", receive, metadata, service)
    ctx = Context(service)
    for key, value in engine.provided.items():
        ctx.keep(key, value)
    res = Response(context=ctx, app=service, request=req)
    req._route = PATH
    db, guard = ctx.peek("db"), service.peek("auth").guard
    rows = await db.fetch(SELECT_USERS, 0, 20)
    users = bind_rows(rows, user)
    observers = {getattr(o, "__name__", ""): o for o in engine.observers}
    floor_pool = await _floor_pool()
    made = 0

    def access_line() -> None:
        # Made on the request's time, written with its batch: one write every 32 lines here.
        nonlocal made
        log_request(the_scope, res, PATH, 0.001)
        made += 1
        if made % 32 == 0:
            writer._write_batch()

    def send_users() -> None:
        res._headers.clear()
        send(res, users)

    async def nothing() -> None:
        pass

    handler = engine.cache["GET"][PATH]  # the route's handler: App.abettor's error answering around list_users
    meta = (DEFAULT, app_module.decoded_headers(the_scope))

    async def handler_layer(call) -> None:
        res._headers.clear()
        await call(req, res, ctx)

    floor_module = importlib.import_module("raw")  # floor.py's app is raw.py's
    raw_query = the_scope["query_string"].decode("latin-1")
    json_header = ("Content-Type", "application/json")

    def header_setter() -> None:
        res._headers.clear()
        res.headers = json_header

    sync_layers = [
        ("empty loop", lambda: None),
        (
            "header decoding, Heaven's (preprocessor: every header, then the Host as an IP address)",
            lambda: preprocessor(the_scope),
        ),
        ("Heaven's Request", lambda: Request(the_scope, b"", receive, metadata, service)),
        ("Heaven's Context", lambda: Context(service)),
        ("Heaven's Response", lambda: Response(app=service, context=ctx, request=req)),
        ("routing: Heaven's tree walk (Routes.resolve)", lambda: engine.resolve("GET", PATH, _Probe())),
        ("routing: a route by its name (the App's)", lambda: engine.cache["GET"].get(PATH)),
        (
            "values provided on the context (db, auth), ctx.keep each",
            lambda: [ctx.keep(k, v) for k, v in engine.provided.items()],
        ),
        ("request id (new, set on the context variable)", lambda: ids.REQUEST_ID.set(ids.new_request_id())),
        ("token check (Guard.require_admin, a token seen before)", lambda: guard.require_admin(req, ctx)),
        ("validation (read_query into Page)", lambda: read_query(req, Page)),
        (
            "the floor's query: parse_qsl and int()",
            lambda: (q := dict(parse_qsl(raw_query)), int(q.get("after", 0)), int(q.get("limit", 20))),
        ),
        ("binding 20 rows to Structs (bind_rows)", lambda: bind_rows(rows, user)),
        ("the floor's binding: User(*row) for 20 rows, unchecked", lambda: [floor_module.User(*row) for row in rows]),
        ("encoding and setting the answer (send)", send_users),
        ("the floor's encoding of the 20 users", lambda: floor_module.encode(users)),
        ("a header set through Heaven's setter (res.headers = ...)", header_setter),
        ("access line, made and written", access_line),
        ("metrics (Metrics.observe)", lambda: observers["observe"](the_scope, res, PATH, 0.001)),
    ]
    async_layers = [
        ("empty loop, awaited", nothing),
        ("database: the plugin's fetch, no bind (awaited)", lambda: db.fetch(SELECT_USERS, 0, 20)),
        ("database: asyncpg's pool.fetch, no reset (awaited)", lambda: floor_pool.fetch(SELECT_USERS, 0, 20)),
        ("whole request, the service, one at a time (awaited)", lambda: service(scope(), receive, answer)),
        (
            "the App's route table: JSONRoutes.handle (awaited)",
            lambda: engine.handle(scope(), receive, answer, meta, service),
        ),
        ("answering it: JSONRoutes._answer (awaited)", lambda: engine._answer(scope(), receive, meta, service)),
        ("the handler with its check and error answering (awaited)", lambda: handler_layer(handler)),
        ("the handler alone (list_users) (awaited)", lambda: handler_layer(handler.__wrapped__)),
        ("database: the plugin's fetch, rows bound (awaited)", lambda: db.fetch(SELECT_USERS, 0, 20, bind=user)),
        ("whole request, the floor, one at a time (awaited)", lambda: floor(scope(), receive, answer)),
    ]
    if hasattr(app_module, "decoded_headers"):  # since the App decodes them itself
        decode = app_module.decoded_headers
        sync_layers.insert(2, ("header decoding, the App's (decoded_headers)", lambda: decode(the_scope)))
    routes_module = sys.modules.get("heaven_plugins.routes")
    if hasattr(routes_module, "_context"):  # since the App makes each request's Context itself
        make = routes_module._context
        context_layer = (
            "a Context with the provided values, as the App makes it",
            lambda: make(service, engine.provided),
        )
        sync_layers.insert(
            sync_layers.index(next(x for x in sync_layers if x[0] == "Heaven's Context")) + 1, context_layer
        )
    for name, call in sync_layers:
        print(f"layer\t{name}", flush=True)
        os.getppid()
        for _ in range(N):
            call()
    for name, call in async_layers:
        print(f"layer\t{name}", flush=True)
        os.getppid()
        for _ in range(N):
            await call()
    os.getppid()
    if set(statuses) != {200}:
        raise SystemExit(f"answers were not all 200: {dict(statuses)}")
    sys.stdout.flush()
    os._exit(0)  # no shutdown: it is not counted


async def _floor_pool():
    floor = importlib.import_module("floor")
    import asyncpg

    return await asyncpg.create_pool(os.environ["DATABASE_URL"], min_size=1, max_size=1, connection_class=floor.Unreset)


if __name__ == "__main__":
    layers()
