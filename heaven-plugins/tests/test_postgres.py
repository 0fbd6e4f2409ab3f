"""The Postgres plugin against a real server: binding, transactions, the context, failing to start."""

import asyncio
import contextlib
import logging
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import httpx
import msgspec
import pytest
from heaven import Router

from conftest import settings_for
from example import User, create_app
from heaven_plugins.postgres import (
    DB,
    BindError,
    DatabaseReadOnly,
    DatabaseUnavailable,
    Postgres,
    bind_rows,
    describe,
    postgres_of,
)
from heaven_plugins.postgres.answers import conflict
from heaven_plugins.web import public, send


class Pair(msgspec.Struct):
    n: int
    label: str


@contextlib.asynccontextmanager
async def running(db: Postgres) -> AsyncIterator[Postgres]:
    """The plugin started, as the app's startup hook starts it, and shut down after the block."""
    await db.startup()
    try:
        yield db
    finally:
        await db.shutdown()


async def test_fetch_binds_rows_to_structs(db):
    rows = await db.fetch("SELECT g AS n, 'n' || g AS label FROM generate_series(1, 3) g", bind=Pair)
    assert rows == [Pair(1, "n1"), Pair(2, "n2"), Pair(3, "n3")]


async def test_bind_matches_columns_by_name_in_any_order(db):
    rows = await db.fetch("SELECT 'one' AS label, 1 AS n", bind=Pair)
    assert rows == [Pair(1, "one")]


async def test_bind_validates_types_and_names_the_column(db):
    with pytest.raises(BindError, match="label"):
        await db.fetch("SELECT 1 AS n, 2 AS label", bind=Pair)


async def test_bind_validates_every_row_not_just_the_first(db):
    with pytest.raises(BindError):
        await db.fetch("SELECT 1 AS n, 'a' AS label UNION ALL SELECT 2, NULL", bind=Pair)


async def test_bind_gives_the_same_structs_as_msgspec_convert(db, conn):
    await conn.execute("INSERT INTO users (email, name) SELECT 'u' || g || '@x.io', 'U' FROM generate_series(1, 50) g")
    rows = await conn.fetch("SELECT id, email, name, is_active, created_at FROM users")
    assert bind_rows(rows, User) == msgspec.convert([dict(row) for row in rows], list[User])


async def test_fetchrow_fetchval_execute(db):
    assert await db.fetchrow("SELECT 7 AS n, 'x' AS label", bind=Pair) == Pair(7, "x")
    assert await db.fetchrow("SELECT 1 AS n, 'x' AS label WHERE false", bind=Pair) is None
    assert (await db.fetchrow("SELECT 2 AS n"))["n"] == 2
    assert await db.fetchval("SELECT 40 + 2") == 42
    assert await db.execute("CREATE TEMP TABLE t (x int)") == "CREATE TABLE"


async def test_transaction_commits_or_rolls_back_as_a_whole(db, conn):
    insert = "INSERT INTO users (email, name) VALUES ($1, 'T')"
    async with db.transaction() as tx:
        await tx.execute(insert, "kept@example.com")
        assert await tx.fetchval("SELECT count(*) FROM users") == 1
    with pytest.raises(asyncpg.UniqueViolationError):
        async with db.transaction() as tx:
            await tx.execute(insert, "lost@example.com")
            await tx.execute(insert, "KEPT@example.com")
    assert await conn.fetchval("SELECT array_agg(email) FROM users") == ["kept@example.com"]


async def test_a_unique_violation_is_a_409_naming_the_field_never_the_value(db):
    async with db.connection() as queries:
        await queries.execute('CREATE TEMP TABLE pairs (a int, b int, "Secret Code" varchar(20), UNIQUE (a, b))')
        await queries.execute('CREATE UNIQUE INDEX ON pairs (lower("Secret Code"))')
        await queries.execute("INSERT INTO pairs VALUES (1, 2, 'hunter2')")
        answers = []
        for values in ("1, 2, 'x'", "3, 4, 'HUNTER2'"):
            with pytest.raises(asyncpg.UniqueViolationError) as failure:
                await queries.execute(f"INSERT INTO pairs VALUES ({values})")
            answers.append(conflict(failure.value))
    answers.append(conflict(asyncpg.UniqueViolationError("duplicate key")))  # no detail: no privilege to see it
    assert [(answer.status, answer.body()) for answer in answers] == [
        (409, {"error": "conflict", "detail": "this combination of a, b is taken already"}),
        (409, {"error": "conflict", "detail": "this Secret Code is taken already", "field": "Secret Code"}),
        (409, {"error": "conflict", "detail": "this conflicts with what exists already"}),
    ]


async def test_a_deadlock_is_a_503_to_retry_not_a_500(new_app, serve, conn):
    # Two requests lock two rows in opposite orders: Postgres rolls one back (deadlock_timeout, 1 s by default).
    await conn.execute("CREATE TABLE crossed (id int PRIMARY KEY); INSERT INTO crossed VALUES (1), (2)")
    app = new_app()

    @public
    async def lock_both(req, res, ctx):
        first, second = int(req.params["first"]), int(req.params["second"])
        async with ctx.peek(DB).transaction() as tx:
            await tx.execute("UPDATE crossed SET id = id WHERE id = $1", first)
            await tx.execute("SELECT pg_sleep(0.3)")  # the other request locks its first row meanwhile
            await tx.execute("UPDATE crossed SET id = id WHERE id = $1", second)
        send(res, {"locked": [first, second]})

    app.POST("/lock/:first/:second", lock_both)
    try:
        async with httpx.AsyncClient(base_url=await serve(app=app), timeout=10) as client:
            answers = await asyncio.gather(client.post("/lock/1/2"), client.post("/lock/2/1"))
    finally:
        await conn.execute("DROP TABLE crossed")
    statuses = sorted(answer.status_code for answer in answers)
    assert statuses == [200, 503], [answer.text for answer in answers]
    refused = next(answer for answer in answers if answer.status_code == 503)
    assert refused.json()["error"] == "database_contention" and refused.headers["Retry-After"] == "2"
    assert "crossed" not in refused.text  # neither the statement nor the other transaction is told


@pytest.fixture
async def one(migrated) -> AsyncIterator[Postgres]:
    """The plugin with a pool of one connection, so that every query borrows the same one."""
    async with running(Postgres(migrated, min_size=1, max_size=1)) as db:
        yield db


async def last_query(conn: asyncpg.Connection, pid: int) -> tuple[str, str]:
    """What server process `pid` ran last, and its state, as the server sees them."""
    row = await conn.fetchrow("SELECT query, state FROM pg_stat_activity WHERE pid = $1", pid)
    return row["query"], row["state"]


async def test_a_connection_goes_back_to_the_pool_without_a_reset_after_a_plain_query(one, conn):
    pid = await one.fetchval("SELECT pg_backend_pid()")
    assert await one.fetchval("SELECT $1::int + 1", 41) == 42
    # No round trip for asyncpg's reset query: the last thing the server ran is the query itself.
    assert await last_query(conn, pid) == ("SELECT $1::int + 1", "idle")


@pytest.mark.parametrize(
    "change",
    ["SET search_path = nowhere", "SELECT set_config('search_path', 'nowhere', false)", "UPDATE users SET name = name"],
)
async def test_a_statement_that_may_change_the_session_is_reset_before_the_next_query(one, conn, change):
    pid = await one.fetchval("SELECT pg_backend_pid()")
    await one.execute(change)
    assert (await last_query(conn, pid))[0].endswith("RESET ALL;")
    assert await one.fetchval("SHOW search_path") == '"$user", public'


async def test_a_session_advisory_lock_is_released_when_its_connection_goes_back(one, conn):
    assert await one.fetchval("SELECT pg_advisory_lock(4242) IS NOT NULL")
    assert await conn.fetchval("SELECT pg_try_advisory_lock(4242)")
    await conn.execute("SELECT pg_advisory_unlock(4242)")


async def test_a_connection_block_is_reset_whatever_it_ran(one):
    async with one.connection() as queries:
        await queries.fetchval("SELECT set_config('application_name', 'block', false)")
        assert await queries.fetchval("SHOW application_name") == "block"
    assert await one.fetchval("SHOW application_name") != "block"


async def test_a_transaction_left_open_by_a_plain_statement_is_rolled_back(one, conn, caplog):
    pid = await one.fetchval("SELECT pg_backend_pid()")
    await one.execute("BEGIN")
    assert await last_query(conn, pid) == ("ROLLBACK", "idle")
    assert "active transaction" in caplog.text  # asyncpg says so, through the event loop's error handler


async def test_install_puts_the_plugin_on_the_app_and_each_requests_context(migrated):
    app, db = Router(), Postgres(migrated, name="database", min_size=1)
    app.plugin(db)
    seen = {}

    async def handler(req, res, ctx):
        seen["plugin"] = ctx.peek("database")
        seen["value"] = await ctx.database.fetchval("SELECT 1")
        res.body = b"ok"

    app.GET("/probe", handler)
    async with app.earth.test() as earth:
        _, response, _ = await earth.GET("/probe")
    assert response.status == 200
    assert seen == {"plugin": db, "value": 1}
    assert app.peek("database") is db
    assert db.pool is None  # closed by the shutdown hook


def test_plugins_find_the_database_whatever_its_name(migrated):
    app = Router()
    app.plugin(Postgres(migrated, name="anything"))
    assert postgres_of(app).name == "anything"


async def test_startup_fails_naming_the_server_never_the_password(closed_port):
    db = Postgres(f"postgresql://app:hunter2-secret@127.0.0.1:{closed_port}/appdb", connect_timeout=2)
    with pytest.raises(RuntimeError) as failure:
        await db.startup()
    assert f"127.0.0.1:{closed_port}/appdb" in str(failure.value)
    assert "hunter2" not in str(failure.value)


async def test_queries_raise_database_unavailable_when_postgres_is_away(closed_port):
    url = f"postgresql://app:pw@127.0.0.1:{closed_port}/appdb"
    async with running(Postgres(url, min_size=0, connect_timeout=1)) as db:
        with pytest.raises(DatabaseUnavailable) as failure:
            await db.fetch("SELECT 1")
        assert failure.value.code == "database_unavailable"


async def test_a_slow_query_is_cut_off_by_query_timeout(migrated):
    async with running(Postgres(migrated, min_size=1, query_timeout=0.2)) as db:
        with pytest.raises(DatabaseUnavailable):
            await db.fetchval("SELECT pg_sleep(5)")
        assert await db.fetchval("SELECT 1") == 1  # and the pool still works


async def test_requests_beyond_a_full_pool_wait_at_most_acquire_timeout(migrated):
    async with running(Postgres(migrated, min_size=1, max_size=2, acquire_timeout=0.3)) as db:
        started = time.monotonic()
        sleeps = (db.fetchval("SELECT pg_sleep(1)") for _ in range(6))
        results = await asyncio.gather(*sleeps, return_exceptions=True)
        assert [r for r in results if not isinstance(r, DatabaseUnavailable)] == [None, None]
        assert time.monotonic() - started < 1.8  # the four refused did not wait for the sleeps
        assert await db.fetchval("SELECT 1") == 1  # and the pool is whole again


async def test_each_waiting_request_gets_its_own_acquire_timeout(migrated):
    async with running(Postgres(migrated, min_size=1, max_size=1, acquire_timeout=0.4)) as db:
        started = time.monotonic()

        async def refused_after(delay: float) -> float:
            await asyncio.sleep(delay)
            with pytest.raises(DatabaseUnavailable):
                await db.fetchval("SELECT 1")
            return time.monotonic() - started

        holder = asyncio.create_task(db.fetchval("SELECT pg_sleep(1.2)"))
        await asyncio.sleep(0.05)  # the holder has the only connection
        first, second = await asyncio.gather(refused_after(0), refused_after(0.3))
        assert 0.4 <= first < 0.65  # its own deadline: not the holder's 1.2 s
        assert 0.7 <= second < 0.95  # 0.3 + 0.4: neither cut short with the first nor left to wait
        await holder
        # A request that waits less than the timeout gets the connection, and keeps it.
        holder = asyncio.create_task(db.fetchval("SELECT pg_sleep(0.2)"))
        await asyncio.sleep(0.05)
        assert await asyncio.gather(db.fetchval("SELECT 1"), db.fetchval("SELECT pg_sleep(0.5)"), holder) == [
            1,
            None,
            None,
        ]


async def test_a_waiting_request_cancelled_by_its_client_is_not_a_timeout(migrated):
    async with running(Postgres(migrated, min_size=1, max_size=1, acquire_timeout=0.3)) as db:
        holder = asyncio.create_task(db.fetchval("SELECT pg_sleep(0.5)"))
        await asyncio.sleep(0.05)
        waiting = asyncio.create_task(db.fetchval("SELECT 1"))
        await asyncio.sleep(0.05)
        waiting.cancel()  # what a client going away does to its request
        with pytest.raises(asyncio.CancelledError):
            await waiting
        await holder
        await asyncio.sleep(0.3)  # past the cancelled request's deadline: nothing left to expire
        assert await asyncio.gather(db.fetchval("SELECT 2"), db.fetchval("SELECT 3")) == [2, 3]


# --- when the database goes away or refuses ------------------------------------------------------------------------


@contextlib.contextmanager
def records(logger: str, plugin: Postgres) -> Iterator[list[logging.LogRecord]]:
    """The records about `plugin` that reach `logger`'s handlers meanwhile (after its filters). The session's
    other apps log to the same loggers, about the same database: each record says which plugin it is about."""
    seen: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.addFilter(lambda record: getattr(record, "postgres", None) is plugin)
    handler.emit = seen.append
    logging.getLogger(logger).addHandler(handler)
    try:
        yield seen
    finally:
        logging.getLogger(logger).removeHandler(handler)


async def eventually(condition, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not await condition():
        assert time.monotonic() < deadline, f"not within {within} s"
        await asyncio.sleep(0.05)


async def test_a_timed_out_query_is_503_and_its_server_process_is_ended(migrated, conn):
    async with running(Postgres(migrated, min_size=1, query_timeout=0.3)) as db:
        started = time.monotonic()
        with pytest.raises(DatabaseUnavailable):
            await db.fetchval("SELECT pg_sleep(30)")
        assert time.monotonic() - started < 1  # its connection terminated, not waited on

        async def stray_gone() -> bool:
            count = "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(30)'"
            return await conn.fetchval(count) == 0

        await eventually(stray_gone)  # ended by the probe that the timeout set off
        assert await db.fetchval("SELECT 1") == 1 and db.available


async def test_a_timed_out_statement_in_a_transaction_is_503_and_leaves_nothing_open(migrated, conn):
    async with running(Postgres(migrated, min_size=1, max_size=1, query_timeout=0.3)) as db:
        with pytest.raises(DatabaseUnavailable):
            async with db.transaction() as tx:
                await tx.execute("INSERT INTO users (email, name) VALUES ('t@example.com', 'T')")
                await tx.fetchval("SELECT pg_sleep(30)")
        async with db.transaction() as tx:
            assert await tx.fetchval("SELECT count(*) FROM users") == 0  # rolled back

        async def stray_gone() -> bool:  # nor its server process, holding the insert's lock
            count = "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(30)'"
            return await conn.fetchval(count) == 0

        await eventually(stray_gone)
    assert await conn.fetchval("SELECT count(*) FROM users") == 0


async def test_a_write_on_a_read_only_server_is_503_database_read_only_and_reads_go_on(role, conn):
    await conn.execute(f"ALTER ROLE {role.name} SET default_transaction_read_only = on")
    async with running(Postgres(role.url, min_size=1)) as db:
        with records("heaven_plugins.postgres", db) as logged:
            with pytest.raises(DatabaseReadOnly) as refused:
                await db.execute("INSERT INTO users (email, name) VALUES ('w@example.com', 'W')")
            assert refused.value.code == "database_read_only"
            assert await db.fetchval("SELECT count(*) FROM users") == 0  # reads go on
            assert await db.check() == "read_only"
            assert db.available  # the database answers
    assert [r.getMessage() for r in logged] == [
        f"Postgres at {describe(role.url)} is read-only: writes are refused with 503 database_read_only, reads go on"
    ]


async def test_a_transaction_the_code_declares_read_only_is_not_a_failover(migrated):
    async with running(Postgres(migrated, min_size=1)) as db:
        with records("heaven_plugins.postgres", db) as logged:
            with pytest.raises(DatabaseReadOnly):
                async with db.transaction(readonly=True) as tx:
                    await tx.execute("INSERT INTO users (email, name) VALUES ('r@example.com', 'R')")
            assert await db.check() == "ok"
        assert not [r for r in logged if r.levelno >= logging.WARNING]


async def test_credentials_refused_while_reconnecting_are_503_and_one_outage(role, conn):
    async with running(Postgres(role.url, min_size=1, max_size=2)) as db:
        assert await db.fetchval("SELECT 1") == 1 and await db.check() == "ok"
        with records("heaven_plugins.postgres", db) as logged:
            await conn.execute(f"ALTER ROLE {role.name} NOLOGIN")
            await conn.execute(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{role.name}'")
            for _ in range(3):
                with pytest.raises(DatabaseUnavailable) as refused:
                    await db.fetchval("SELECT 1")
                assert refused.value.code == "database_unavailable"
            assert not db.available
            assert await db.check() == "unreachable"
            assert db.outages == 1
            await conn.execute(f"ALTER ROLE {role.name} LOGIN")
            assert await db.check() == "ok"
            assert db.available and await db.fetchval("SELECT 2") == 2
            assert db.outages == 1  # not declared over and begun again while the role was refused
        warnings = [r.getMessage() for r in logged if r.levelno == logging.WARNING]
        assert len(warnings) == 2, warnings
        assert "is unreachable: the database refused the login (InvalidAuthorizationSpecificationError" in warnings[0]
        assert "answers again" in warnings[1] and "3 requests refused" in warnings[1]
        assert role.password not in " ".join(warnings)


async def test_too_many_connections_is_503(role, conn):
    await conn.execute(f"ALTER ROLE {role.name} CONNECTION LIMIT 1")
    async with running(Postgres(role.url, min_size=1, max_size=2)) as db, db.connection() as held:
        with pytest.raises(DatabaseUnavailable) as refused:
            await db.fetchval("SELECT 1")  # needs a second connection
        assert isinstance(refused.value.cause, asyncpg.TooManyConnectionsError)
        assert await held.fetchval("SELECT 1") == 1


async def test_the_pools_reconnect_retries_are_one_line_then_quiet_during_the_outage(role, conn):
    async with running(Postgres(role.url, min_size=2, max_size=2)) as db:
        with records("asyncpg.pool", db) as retries, records("heaven_plugins.postgres", db) as logged:
            await conn.execute(f"ALTER ROLE {role.name} NOLOGIN")
            await conn.execute(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{role.name}'")

            async def outage_begun() -> bool:
                return db.outages == 1

            # No request: asyncpg's own attempt to reconnect the pool's floor is the first sign.
            await eventually(outage_begun)
            await asyncio.sleep(2.5)  # asyncpg tries again after 1 s, then 2 s: during the outage
        await conn.execute(f"ALTER ROLE {role.name} LOGIN")
    assert len(retries) == 1 and retries[0].exc_info is None  # one line, its traceback left out
    assert "InvalidAuthorizationSpecificationError" in retries[0].getMessage()
    assert len([r for r in logged if "is unreachable" in r.getMessage()]) == 1


async def test_a_503_says_why_in_words_and_when_to_try_again(serve):
    # A Unix socket that is gone (its server stopped, its folder removed): the commonest local outage. In a
    # short folder of its own: a socket's path has a limit (107 bytes), which a deep tmp_path may pass.
    with tempfile.TemporaryDirectory() as folder:
        gone = Path(folder) / "gone"
    app = create_app(settings_for(f"postgresql://app@/appdb?host={gone}", pool_min_size=0))
    db = app.peek(DB.name)
    with records("heaven_plugins.postgres", db) as logged:
        async with httpx.AsyncClient(base_url=await serve(app=app)) as http:
            response = await http.post("/users", json={"email": "s@example.com", "name": "S", "password": "x" * 12})
            health = await http.get("/health")

            async def confirmed() -> bool:
                return db.outages == 1

            await eventually(confirmed)
    assert response.status_code == 503 and response.headers["retry-after"] == "2"
    assert response.json() == {
        "error": "database_unavailable",
        "detail": "the database's socket is gone; try again in 2 s",
    }
    assert health.status_code == 503 and health.headers["retry-after"] == "2"
    (warning,) = [r.getMessage() for r in logged if "is unreachable" in r.getMessage()]
    assert "is unreachable: the database's socket is gone (FileNotFoundError" in warning, warning
