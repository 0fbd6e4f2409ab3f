"""Tokens: signed and read back, refused when altered, foreign or old; revocations read from Postgres, none missed."""

import time

import asyncpg
import pytest

from heaven_plugins.signin.tokens import INSERT_REVOCATION, Principal, Revocations, Tokens

SECRET, OTHER = "s" * 32, "o" * 32


def test_a_token_reads_back_as_the_principal_it_was_issued_for():
    tokens = Tokens([SECRET], ttl=60)
    token, principal = tokens.issue(7, True, 1_700_000_000.123456)
    assert principal.id == 7 and principal.is_admin and principal.issued_at == 1_700_000_000.123456
    assert tokens.read(token, now=1_700_000_001) == principal
    assert tokens.issue(7, True, 1_700_000_000)[1].token_id != principal.token_id  # each token its own id


def test_an_altered_token_is_refused():
    tokens = Tokens([SECRET], ttl=60)
    token, _ = tokens.issue(7, False, time.time())
    for position in range(len(token)):
        changed = "A" if token[position] != "A" else "B"
        assert tokens.read(token[:position] + changed + token[position + 1 :], time.time()) is None, position
    for mangled in ["", ".", "..", token[:-1], token + "x", token.replace(".", "", 1), "a.b.c", "\u00e9" * 40]:
        assert tokens.read(mangled, time.time()) is None, mangled


def test_a_token_of_another_secret_is_refused_but_an_old_secret_still_verifies():
    old, _ = Tokens([OTHER], ttl=60).issue(1, False, time.time())
    assert Tokens([SECRET], ttl=60).read(old, time.time()) is None
    rotated = Tokens([SECRET, OTHER], ttl=60)  # the new secret signs, the old one still verifies
    assert rotated.read(old, time.time()) is not None
    new, _ = rotated.issue(2, False, time.time())
    assert Tokens([SECRET], ttl=60).read(new, time.time()) is not None


def test_a_token_expires_ttl_seconds_after_it_was_issued_whatever_the_ttl_was_then():
    token, _ = Tokens([SECRET], ttl=3600).issue(1, False, 1000.0)
    assert Tokens([SECRET], ttl=3600).read(token, now=1000.0 + 3599) is not None
    assert Tokens([SECRET], ttl=3600).read(token, now=1000.0 + 3600) is None
    assert Tokens([SECRET], ttl=60).read(token, now=1000.0 + 61) is None  # TOKEN_TTL shortened since


def test_a_token_read_before_is_remembered_yet_still_expires():
    tokens = Tokens([SECRET], ttl=60)
    token, principal = tokens.issue(1, False, 1000.0)
    assert tokens.read(token, now=1001.0) == principal
    assert tokens.read(token, now=1001.0) == principal  # from memory: the signature is not checked again
    assert tokens.read(token, now=1060.0) is None
    others = [tokens.issue(2, False, 1000.0)[0] for _ in range(Tokens.REMEMBERED + 10)]
    assert all(tokens.read(other, now=1001.0) is not None for other in others)  # past the bound it starts again
    assert tokens.read(token, now=1001.0) == principal


@pytest.mark.parametrize("secrets", [[], [""], ["short"], [SECRET, "x" * 31]])
def test_a_missing_or_short_secret_is_refused(secrets):
    with pytest.raises(ValueError, match="TOKEN_SECRET"):
        Tokens(secrets, ttl=60)


async def test_a_revocation_committed_after_a_read_began_is_not_missed(db, migrated):
    """The next read takes every row written since the oldest transaction the last read saw running,
    so a revocation whose transaction began before a read and committed after it is still seen."""
    revocations = Revocations(ttl=3600)
    now = time.time()
    slow, fast = await asyncpg.connect(migrated), await asyncpg.connect(migrated)
    try:
        late = slow.transaction()
        await late.start()
        await slow.execute(INSERT_REVOCATION, "late", now)  # written, not committed yet
        await revocations.refresh(db)
        await fast.execute(INSERT_REVOCATION, "early", now)  # a later transaction, committed at once
        await revocations.refresh(db)
        assert set(revocations.tokens) == {"early"}
        await late.commit()
        await revocations.refresh(db)
        assert set(revocations.tokens) == {"early", "late"}
    finally:
        await slow.close()
        await fast.close()


async def test_a_cutoff_voids_the_tokens_issued_before_it_only(db, conn):
    user_id = await conn.fetchval("INSERT INTO users (email, name) VALUES ('c@example.com', 'C') RETURNING id")
    revocations = Revocations(ttl=3600)
    before = await conn.fetchval("SELECT extract(epoch FROM clock_timestamp())::float8")
    await conn.execute("UPDATE users SET is_active = false WHERE id = $1", user_id)  # as psql would
    after = await conn.fetchval("SELECT extract(epoch FROM clock_timestamp())::float8")
    await revocations.refresh(db)
    assert revocations.voids(Principal(user_id, False, before, "a"))
    assert not revocations.voids(Principal(user_id, False, after, "b"))
    assert not revocations.voids(Principal(user_id + 1, False, before, "c"))


async def test_what_voids_only_expired_tokens_is_neither_read_nor_kept(db, conn):
    now = time.time()
    await conn.execute(INSERT_REVOCATION, "old", now - 7200)
    await conn.execute(INSERT_REVOCATION, "new", now - 60)
    revocations = Revocations(ttl=3600)
    await revocations.refresh(db)
    assert set(revocations.tokens) == {"new"}
    revocations.forget_expired(now + 3600)
    assert revocations.tokens == {}
