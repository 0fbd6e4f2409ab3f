-- Sign-in throttle, second design (auth.py, Throttle): a count per key and window instead of a row per
-- key ever tried, a refused attempt writing nothing, and the owner's known addresses kept apart from
-- a guesser's. sign_in_failures stays for processes of the previous version during a rolling update.

-- Failed sign-ins in the window that began at window_start, and attempts still being checked
-- (pending), per key: an address (account ''), an account from addresses it does not know (address
-- ''), or an account from one address. `account` is lower(email), as the sign-in's lookup compares
-- emails, so every spelling that reaches an account shares its counts.
CREATE TABLE sign_in_counts (
    account text NOT NULL,
    address text NOT NULL,
    window_start timestamptz NOT NULL,
    failures integer NOT NULL DEFAULT 0,
    pending integer NOT NULL DEFAULT 0,
    PRIMARY KEY (account, address)
);
CREATE INDEX sign_in_counts_window_start ON sign_in_counts (window_start);

-- Addresses an account was signed in to from: guesses from elsewhere do not lock them out.
CREATE TABLE sign_in_known (
    account text NOT NULL,
    address text NOT NULL,
    signed_in_at timestamptz NOT NULL,
    PRIMARY KEY (account, address)
);
CREATE INDEX sign_in_known_signed_in_at ON sign_in_known (signed_in_at);

-- One key's counts, locked until the calling statement ends, in a window that has not passed.
CREATE FUNCTION sign_in_lock(
    key_account text, key_address text, window_seconds float8,
    OUT failures integer, OUT pending integer, OUT window_left float8
) LANGUAGE plpgsql AS $$
BEGIN
    LOOP  -- again if a sweep deleted the row between the two statements
        INSERT INTO sign_in_counts (account, address, window_start) VALUES (key_account, key_address, now())
        ON CONFLICT DO NOTHING;
        SELECT c.failures, c.pending, extract(epoch FROM c.window_start - now())::float8 + window_seconds
        INTO failures, pending, window_left
        FROM sign_in_counts c WHERE c.account = key_account AND c.address = key_address FOR UPDATE;
        EXIT WHEN FOUND;
    END LOOP;
    IF window_left <= 0 THEN
        UPDATE sign_in_counts c SET window_start = now(), failures = 0, pending = 0
        WHERE c.account = key_account AND c.address = key_address;
        failures := 0;
        pending := 0;
        window_left := window_seconds;
    END IF;
END
$$;

-- Admit a sign-in attempt (retry_after NULL) and hold its place in each count it is checked against,
-- or say how many seconds to wait. Counts are locked in one order, the address's, the account's, the
-- pair's, here and in sign_in_settle, so that concurrent sign-ins wait for each other and never
-- deadlock; a key is locked only once the ones before it admitted the attempt, so that a refused
-- attempt makes no row. A place held by an attempt still being checked counts against the limit:
-- a burst of guesses sent at once gets no more tries than the limit; the wait is then 1 s.
CREATE FUNCTION sign_in_admit(
    email text, client text, per_account integer, per_address integer, window_seconds float8, known_seconds float8,
    OUT account text, OUT known boolean, OUT retry_after float8
) LANGUAGE plpgsql AS $$
DECLARE
    count record;  -- one key's: failures, pending, window_left
BEGIN
    sign_in_admit.account := lower(email);
    known := EXISTS (
        SELECT FROM sign_in_known k WHERE k.account = lower(email) AND k.address = client
        AND k.signed_in_at > now() - make_interval(secs => known_seconds)
    );
    SELECT * INTO count FROM sign_in_lock('', client, window_seconds);
    IF count.failures + count.pending >= per_address THEN
        retry_after := CASE WHEN count.failures >= per_address THEN count.window_left ELSE 1 END;
        RETURN;
    END IF;
    IF NOT known THEN
        SELECT * INTO count FROM sign_in_lock(sign_in_admit.account, '', window_seconds);
        IF count.failures + count.pending >= per_account THEN
            retry_after := CASE WHEN count.failures >= per_account THEN count.window_left ELSE 1 END;
            RETURN;
        END IF;
    END IF;
    SELECT * INTO count FROM sign_in_lock(sign_in_admit.account, client, window_seconds);
    IF count.failures + count.pending >= per_account THEN
        retry_after := CASE WHEN count.failures >= per_account THEN count.window_left ELSE 1 END;
        RETURN;
    END IF;
    UPDATE sign_in_counts c SET pending = c.pending + 1
    WHERE (c.account, c.address) IN (('', client), (sign_in_admit.account, client))
    OR (NOT known AND c.account = sign_in_admit.account AND c.address = '');
END
$$;

-- An admitted attempt's outcome: its places released; a failure counted against each key it was
-- checked against; a success forgives the failures from this address to this account, and makes
-- the address known to it. `succeeded` NULL: never judged (the password could not be checked, as
-- when its threads were busy), so only its places are released.
CREATE FUNCTION sign_in_settle(key_account text, client text, known boolean, succeeded boolean) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE sign_in_counts SET pending = greatest(pending - 1, 0), failures = failures + (succeeded IS FALSE)::integer
    WHERE account = '' AND address = client;
    IF NOT known THEN
        UPDATE sign_in_counts SET pending = greatest(pending - 1, 0), failures = failures + (succeeded IS FALSE)::integer
        WHERE account = key_account AND address = '';
    END IF;
    IF succeeded THEN
        DELETE FROM sign_in_counts WHERE account = key_account AND address = client;
        INSERT INTO sign_in_known (account, address, signed_in_at) VALUES (key_account, client, now())
        ON CONFLICT (account, address) DO UPDATE SET signed_in_at = excluded.signed_in_at;
    ELSE
        UPDATE sign_in_counts SET pending = greatest(pending - 1, 0), failures = failures + (succeeded IS FALSE)::integer
        WHERE account = key_account AND address = client;
    END IF;
END
$$;
