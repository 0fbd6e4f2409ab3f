"""The Lender gives a connection with nothing to undo back to asyncpg's pool itself (Lender.give_back), in the steps
asyncpg's own release takes, and leaves everything else to asyncpg."""

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

from heaven_plugins.postgres import Postgres
from heaven_plugins.postgres import pool as lending


@pytest.fixture
async def one(migrated) -> AsyncIterator[Postgres]:
    """The plugin with a pool of one connection: every borrow is the same connection."""
    db = Postgres(migrated, min_size=1, max_size=1)
    await db.startup()
    yield db
    await db.shutdown()


def given_back(db: Postgres, proxy, con: asyncpg.Connection, released_before: int) -> dict:
    """What asyncpg's release leaves behind, as far as the pool, the holder, the proxy and the connection show it."""
    holder = proxy._holder
    return {
        "holder free": holder._in_use is None,
        "proxy detached": proxy._con is None and holder._proxy is None and con._proxy is None,
        "holder in the queue": holder in db.pool._queue._queue,
        "idle connections": db.pool.get_idle_size(),
        "inactivity timer": holder._inactive_callback is not None,
        "releases counted": con._pool_release_ctr - released_before,
        "lender's count": db._lender._borrowed,
        "holder's timeout": holder._timeout,
        "listeners": (len(con._listeners), len(con._log_listeners)),
        "still connected": not con.is_closed(),
    }


async def borrow(db: Postgres, query: str = "SELECT 1"):
    proxy = await db._lender.acquire()
    await proxy.fetchval(query)
    return proxy, proxy._con, proxy._con._pool_release_ctr


def test_the_installed_asyncpg_has_every_part_give_back_uses():
    # With the asyncpg the project locks, give_back is on: an asyncpg without these parts fails here first.
    assert lending.knows_asyncpg()
    assert lending.KNOWN


async def test_a_plain_query_gives_its_connection_back_at_once_as_asyncpg_would(one):
    # asyncpg's own release, through the slow path (session_changed makes give_back decline, then resets it).
    proxy, con, before = await borrow(one)
    con.change_session()
    assert one._lender.give_back(proxy) is False
    await one._lender.release(proxy)
    by_asyncpg = given_back(one, proxy, con, before)

    proxy, con, before = await borrow(one)
    tasks = len(asyncio.all_tasks())
    assert one._lender.give_back(proxy) is True  # nothing awaited: the pool has it back already
    assert len(asyncio.all_tasks()) == tasks  # and no task was started to give it back
    assert given_back(one, proxy, con, before) == by_asyncpg
    assert by_asyncpg["holder free"] and by_asyncpg["proxy detached"] and by_asyncpg["idle connections"] == 1
    assert await one.fetchval("SELECT 41 + 1") == 42  # the same connection, lent again


async def test_a_connection_given_back_wakes_the_request_waiting_for_it(one):
    proxy, _, _ = await borrow(one)
    waiting = asyncio.create_task(one.fetchval("SELECT 2"))
    await asyncio.sleep(0.05)
    assert one.waiting == 1
    assert one._lender.give_back(proxy) is True
    assert await asyncio.wait_for(waiting, 5) == 2
    assert one.waiting == 0 and one._lender._borrowed == 0


async def test_a_request_querying_again_on_a_full_pool_waits_its_turn_behind_one_already_waiting(migrated):
    # A connection given back at once wakes the waiting request, but stays in asyncpg's queue until that request
    # runs; one that queries again meanwhile must not take it from under it, over and over, until it gets a 503.
    db = Postgres(migrated, min_size=1, max_size=1, acquire_timeout=1.0)
    await db.startup()
    try:

        async def one_query_after_another():
            for _ in range(500):
                await db.fetchval("SELECT pg_sleep(0.005)")

        busy = asyncio.create_task(one_query_after_another())
        try:
            await asyncio.sleep(0.05)
            assert await asyncio.wait_for(db.fetchval("SELECT 42"), 5) == 42  # else DatabaseUnavailable after 1 s
            assert not busy.done()  # served in its turn, not once the other was through
        finally:
            busy.cancel()
            await asyncio.gather(busy, return_exceptions=True)
    finally:
        await db.shutdown()


@pytest.mark.parametrize("state", ["session changed", "transaction open", "closed", "cancelling"])
async def test_a_connection_with_something_to_undo_goes_back_through_asyncpg(one, state):
    proxy, con, _ = await borrow(one)
    if state == "session changed":
        await proxy.execute("SET search_path = nowhere")
        con.change_session()
    elif state == "transaction open":
        await proxy.execute("BEGIN")
    elif state == "closed":
        con.terminate()
    else:  # a query cancelled on the client: asyncpg waits for the server's answer to the cancel before reuse
        query = asyncio.create_task(proxy.fetchval("SELECT pg_sleep(10)"))
        await asyncio.sleep(0.2)
        query.cancel()
        with pytest.raises(asyncio.CancelledError):
            await query
        assert con._protocol._is_cancelling() or con.is_closed()
    assert one._lender.give_back(proxy) is False
    await one._lender.release(proxy)
    assert one._lender._borrowed == 0
    # asyncpg reset it (or replaced it): the next borrower finds a clean session.
    assert await one.fetchval("SHOW search_path") == '"$user", public'
    proxy = await one._lender.acquire()
    try:
        assert await proxy.fetchval("SELECT 1") == 1
        assert not proxy._con._protocol.is_in_transaction()
    finally:
        assert one._lender.give_back(proxy) is True


async def test_another_asyncpg_is_lent_by_its_own_pool(one, monkeypatch):
    monkeypatch.setattr(lending, "PARTS", (*lending.PARTS, ("pool", "Pool", ("_a_part_asyncpg_lacks",))))
    assert not lending.knows_asyncpg()
    lender = lending.Lender(1.0, 1)
    lender.open(one.pool, asyncio.get_running_loop())
    lender._direct = lending.knows_asyncpg()  # as a Lender made under that asyncpg would be
    proxy = await lender.acquire()
    assert lender.give_back(proxy) is False
    await lender.release(proxy)
    assert one.pool.get_idle_size() == 1


async def test_many_requests_on_a_small_pool_each_give_their_connection_back(migrated):
    db = Postgres(migrated, min_size=3, max_size=3)
    await db.startup()
    try:
        answers = await asyncio.gather(*(db.fetchval("SELECT $1::int", n) for n in range(200)))
        assert answers == list(range(200))
        assert db._lender._borrowed == 0 and db.pool.get_idle_size() == 3 and db.waiting == 0
    finally:
        await db.shutdown()
