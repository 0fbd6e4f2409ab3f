"""Logs are JSON lines written off the request path: one access line per request, a request id on
every line about a request and on every response, tracebacks rate-limited, lines dropped with a
count (never waited for) when stderr is blocked, none lost when the loop that made them ends."""

import asyncio
import contextlib
import json
import logging
import os
import pty
import re
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

from conftest import ADMIN, make_admin, sign_in
from heaven_plugins import logs
from heaven_plugins.logs import Console, JSONFormatter, access
from heaven_plugins.web import HTTPError, send

GENERATED = re.compile(r"[0-9a-f]{12}-[0-9]+")


def access_lines(lines: list[dict]) -> list[dict]:
    return [line for line in lines if line["logger"] == access.name]


@pytest.fixture
async def failing(new_app, serve, conn, monkeypatch):
    """A client signed in as an admin of a service with routes that fail: /boom raises in its
    handler, /hooked in a BEFORE hook; and a traceback limit of its own, untouched by the tests before."""
    monkeypatch.setattr(logs.writer, "tracebacks", logs.TracebackLimit())
    app = new_app(max_body_bytes=100)

    async def boom(req, res, ctx):
        logging.getLogger("example.test").warning("about to fail")
        raise RuntimeError("boom")

    def refuse(req, res, ctx):
        raise HTTPError(401, "unauthorized", "sign in first")

    def crash(req, res, ctx):
        raise ValueError("hook failed")

    async def hooked(req, res, ctx):
        send(res, {"reached": True})

    app.GET("/boom", boom)
    app.BEFORE("/hooked/refused", refuse)
    app.BEFORE("/hooked/crashed", crash)
    app.GET("/hooked/refused", hooked)
    app.GET("/hooked/crashed", hooked)
    await make_admin(conn)
    async with httpx.AsyncClient(base_url=await serve(app=app)) as http:
        http.headers["Authorization"] = await sign_in(http, ADMIN)
        yield http


async def test_a_request_is_one_json_line(admin, log_lines):
    log_lines()
    response = await admin.get("/users", params={"limit": 5, "token": "hunter2"})
    assert response.status_code == 200
    (line,) = access_lines(log_lines())
    assert line["level"] == "INFO" and line["message"] == "request"
    assert {k: line[k] for k in ("method", "path", "route", "status", "client")} == {
        "method": "GET",
        "path": "/users",
        "route": "/users",
        "status": 200,
        "client": "127.0.0.1",
    }
    assert line["duration_ms"] >= 0
    assert line["request_id"] == response.headers["x-request-id"]
    assert "hunter2" not in json.dumps(line)


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("GET", "/users", None, 200),
        ("GET", "/nowhere", None, 404),  # no route: Heaven's own answer
        ("GET", "/users/999", None, 404),  # a handler's
        ("PUT", "/users", None, 405),
        ("POST", "/users", b"x" * 200, 413),
        ("POST", "/users", b'{"email": "nope", "name": "X"}', 422),
        ("POST", "/users", b"{oops", 400),
        ("GET", "/boom", None, 500),
        ("GET", "/hooked/refused", None, 401),
        ("GET", "/hooked/crashed", None, 500),
    ],
)
async def test_every_answer_carries_its_request_id(failing, log_lines, method, path, body, status):
    log_lines()
    sent = {
        "kept": "req-42_a.b:c/d+e=f",
        "generated": None,
        "too long": "x" * 129,
        "unsafe": "evil id;<script>",
    }
    answers = {}
    for case, request_id in sent.items():
        headers = {"x-request-id": request_id} if request_id else {}
        if body is not None:
            headers["content-type"] = "application/json"
        answers[case] = await failing.request(method, path, content=body, headers=headers)
    lines = log_lines()
    for case, response in answers.items():
        assert response.status_code == status, (case, response.text)
        assert response.headers["content-type"] == "application/json"
        returned = response.headers["x-request-id"]
        if case == "kept":
            assert returned == sent["kept"]
        else:
            assert GENERATED.fullmatch(returned), (case, returned)
        (line,) = [line for line in access_lines(lines) if line["request_id"] == returned]
        assert (line["method"], line["path"], line["status"]) == (method, path, status)
    assert all(line["request_id"] for line in access_lines(lines))


TRACED = ("trace-me", "trace-hook")


async def test_every_line_about_a_request_has_its_id(failing, log_lines):
    log_lines()
    failed = await failing.get("/boom", headers={"x-request-id": "trace-me"})
    crashed = await failing.get("/hooked/crashed", headers={"x-request-id": "trace-hook"})
    assert failed.status_code == crashed.status_code == 500
    assert "Traceback" not in failed.text + crashed.text
    lines = log_lines()
    about = {rid: [line["message"] for line in lines if line.get("request_id") == rid] for rid in TRACED}
    assert about == {
        "trace-me": ["about to fail", "unhandled error in GET /boom", "request"],
        "trace-hook": ["unhandled error in GET /hooked/crashed", "request"],
    }
    errors = [line for line in lines if line["level"] == "ERROR"]
    assert "RuntimeError: boom" in errors[0]["exception"] and "ValueError: hook failed" in errors[1]["exception"]


async def test_a_storm_of_tracebacks_is_cut_to_a_few_and_a_count(failing, log_lines, monkeypatch):
    monkeypatch.setattr(logs.writer.tracebacks, "every", 0.5)  # the count comes this long after the first left out
    log_lines()
    storm = 4 * logs.TRACEBACK_BURST
    statuses = [(await failing.get("/boom")).status_code for _ in range(storm)]
    assert statuses == [500] * storm
    lines = log_lines()
    deadline = asyncio.get_running_loop().time() + 10
    while True:  # the count is written within `every` of the first left out, and again for any left out after it
        tracebacks = [line for line in lines if "exception" in line]
        notes = [line for line in lines if "suppressed" in line]
        if notes and len(tracebacks) + sum(note["suppressed"] for note in notes) >= storm:
            break
        assert asyncio.get_running_loop().time() < deadline, f"{len(tracebacks)} tracebacks and {notes} of {storm}"
        await asyncio.sleep(0.1)
        lines += log_lines()
    assert logs.TRACEBACK_BURST <= len(tracebacks) < storm
    assert len(tracebacks) + sum(note["suppressed"] for note in notes) == storm
    for note in notes:
        assert note["level"] == "WARNING" and note["exceptions"] == {"RuntimeError": note["suppressed"]}
    assert len(access_lines(lines)) == storm  # every request still has its line


async def test_a_blocked_stderr_drops_lines_with_a_count_and_never_holds_up_a_request(
    admin, log_lines, monkeypatch, caplog
):
    caplog.set_level(logging.WARNING, logger="httpx")  # the test's own client would log each request too
    # The session's other apps log through the same writer (one whose role a test removed goes stale 5 s later
    # and says so); only the access lines are counted here, so no record may join them meanwhile.
    caplog.set_level(logging.CRITICAL)
    caplog.set_level(logging.CRITICAL, logger="heaven_plugins")
    log_lines()
    read_end, write_end = os.pipe()  # nobody reads it until the requests are done: writes block when it is full
    with os.fdopen(write_end, "wb") as blocked:
        monkeypatch.setattr(logs.writer, "stream", blocked)
        monkeypatch.setattr(logs.writer, "capacity", 50)
        sent = 600
        started = asyncio.get_running_loop().time()
        statuses = []
        for i in range(sent):
            statuses.append((await admin.get("/users/4242", headers={"x-request-id": f"drop-{i}"})).status_code)
        elapsed = asyncio.get_running_loop().time() - started
        assert statuses == [404] * sent
        assert elapsed < 30  # bounded on a loaded machine: no request waited for stderr

        received: list[bytes] = []
        draining = threading.Thread(target=lambda: received.extend(iter(lambda: os.read(read_end, 65536), b"")))
        draining.start()
        assert logs.writer.flush(10)
        monkeypatch.setattr(logs.writer, "stream", None)
    draining.join(10)
    os.close(read_end)
    lines = [json.loads(line) for line in b"".join(received).splitlines()]
    written = [line for line in access_lines(lines) if line["request_id"].startswith("drop-")]
    dropped = sum(line["dropped"] for line in lines if "dropped" in line)
    assert 0 < len(written) < sent and dropped > 0
    assert len(written) + dropped == sent
    assert log_lines() == []  # nothing went to stderr meanwhile


def test_a_loop_that_ends_before_its_batch_is_written_loses_no_line(capsys):
    # Lines made on an event loop wait there for its batch; a loop that ends first never writes it
    # (a script's asyncio.run). The next loop's batch takes them along, without a flush.
    async def log(message: str, then_wait: float = 0) -> None:
        logging.getLogger("example.test").warning(message)
        await asyncio.sleep(then_wait)

    assert logs.writer.flush()
    capsys.readouterr()
    asyncio.run(log("from a loop that ended at once"))
    asyncio.run(log("from the next loop", then_wait=20 * logs.BATCH_SECONDS))
    written = [json.loads(line)["message"] for line in capsys.readouterr().err.splitlines()]
    assert written == ["from a loop that ended at once", "from the next loop"]


async def test_access_log_off_logs_no_request(migrated, serve, log_lines):
    url = await serve(migrated, access_log="false")
    log_lines()
    async with httpx.AsyncClient(base_url=url) as http:
        response = await http.get("/health")
    assert response.status_code == 200 and response.headers["x-request-id"]
    assert access_lines(log_lines()) == []


def test_a_traceback_stays_on_one_line():
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, "", 0, "failed %s", ("here",), sys.exc_info())
    line = JSONFormatter().format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["message"] == "failed here"
    assert "ValueError: boom" in entry["exception"]
    assert entry["time"].endswith("Z") and "request_id" not in entry


async def test_console_lines_are_short_and_tracebacks_print_as_tracebacks(failing, capsys, monkeypatch):
    # LOG_FORMAT=console, or stderr a terminal (below): what a person reads, here without colour.
    monkeypatch.setattr(logs.writer, "render", Console(colour=False).render)
    logs.writer.flush()
    capsys.readouterr()
    assert (await failing.get("/boom", headers={"x-request-id": "trace-me"})).status_code == 500
    assert (await failing.get("/health")).status_code == 200
    logs.writer.flush()
    text = capsys.readouterr().err
    clock = r"\d\d:\d\d:\d\d\.\d{3}"
    assert re.search(rf"^{clock} WARNING about to fail \(\S+\.test\) #trace-me$", text, re.M), text
    failed = re.search(
        rf"^{clock} ERROR   unhandled error in GET /boom \(\S+\) #trace-me\nTraceback \(most", text, re.M
    )
    assert failed and "\nRuntimeError: boom\n" in text, text
    assert re.search(rf"^{clock} INFO    GET /boom 500 [\d.]+ ms #trace-me$", text, re.M), text
    assert re.search(rf"^{clock} INFO    GET /health 200 [\d.]+ ms #\d+$", text, re.M), text  # its own id, shortened
    assert '"request_id"' not in text  # not one JSON line


@pytest.mark.parametrize(
    ("terminal", "log_format", "console"),
    [(True, None, True), (True, "json", False), (False, None, False), (False, "console", True)],
)
def test_a_terminal_gets_coloured_lines_and_anything_else_json(terminal, log_format, console):
    script = (
        "import logging; from heaven_plugins import logs; logs.configure('INFO'); "
        "logging.getLogger('example.x').warning('look here'); logs.writer.flush()"
    )
    environ = {key: value for key, value in os.environ.items() if key not in ("LOG_FORMAT", "NO_COLOR")}
    environ["PYTHONPATH"] = str(Path(logs.__file__).parents[2])
    if log_format:
        environ["LOG_FORMAT"] = log_format
    main, other = pty.openpty() if terminal else os.pipe()
    try:
        child = subprocess.run([sys.executable, "-c", script], stderr=other, env=environ, timeout=30, check=False)
        os.close(other)
        written = b""
        with contextlib.suppress(OSError):  # a pty whose other end closed reads EIO, not b""
            while chunk := os.read(main, 65536):
                written += chunk
    finally:
        os.close(main)
    assert child.returncode == 0, written
    text = written.decode()
    if console:
        assert re.fullmatch(r"\S*\d\d:\d\d:\d\d\.\d{3}\S* \S*WARNING\S* +look here \S*\(\S+\.x\)\S*\r?\n", text), text
        assert ("\x1b[33m" in text) is terminal  # coloured for a terminal only
    else:
        assert json.loads(text)["message"] == "look here"
