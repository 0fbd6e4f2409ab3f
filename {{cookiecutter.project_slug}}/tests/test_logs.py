"""Logs are JSON lines; each request a handler answers is one of them, without the query string."""

import io
import json
import logging
import sys
from contextlib import contextmanager

import httpx

from {{ cookiecutter.package_name }}.logs import JSONFormatter, access


@contextmanager
def captured_access_log():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JSONFormatter())
    access.addHandler(handler)
    try:
        yield stream
    finally:
        access.removeHandler(handler)


async def test_a_request_is_one_json_line(admin):
    with captured_access_log() as stream:
        response = await admin.get("/users", params={"limit": 5, "token": "hunter2"})
    assert response.status_code == 200
    (line,) = stream.getvalue().splitlines()
    entry = json.loads(line)
    assert entry["logger"] == access.name and entry["level"] == "INFO"
    assert {k: entry[k] for k in ("method", "path", "route", "status")} == {
        "method": "GET",
        "path": "/users",
        "route": "/users",
        "status": 200,
    }
    assert entry["duration_ms"] >= 0
    assert "hunter2" not in line


async def test_an_error_answer_is_logged_with_its_status(admin):
    with captured_access_log() as stream:
        await admin.get("/users/999")
    assert json.loads(stream.getvalue())["status"] == 404


async def test_access_log_off_logs_no_request(migrated, serve):
    url = await serve(migrated, access_log="false")
    with captured_access_log() as stream:
        async with httpx.AsyncClient(base_url=url) as http:
            assert (await http.get("/health")).status_code == 200
    assert stream.getvalue() == ""


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
