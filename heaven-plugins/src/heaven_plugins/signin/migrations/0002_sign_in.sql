-- Sign-in: passwords, the admin role, revoked tokens, and failed sign-ins counted.

-- An argon2id hash (it carries its parameters and salt). NULL: no password, so no sign-in, for
-- users made before this migration until the admin command sets one.
ALTER TABLE users ADD COLUMN password_hash text;
ALTER TABLE users ADD COLUMN is_admin boolean NOT NULL DEFAULT false;

-- Tokens signed out before they expire. `xid` is the transaction that wrote the row: each app
-- process reads only the rows written since its last read (tokens.py, SELECT_REVOCATIONS).
CREATE TABLE revoked_tokens (
    token_id text PRIMARY KEY,
    issued_at timestamptz NOT NULL,
    xid xid8 NOT NULL DEFAULT pg_current_xact_id()
);
CREATE INDEX revoked_tokens_xid ON revoked_tokens (xid);
CREATE INDEX revoked_tokens_issued_at ON revoked_tokens (issued_at);

-- Per user, the tokens issued before `issued_before` are void. No foreign key: the row of a
-- deleted user must outlive the user.
CREATE TABLE token_cutoffs (
    user_id bigint PRIMARY KEY,
    issued_before timestamptz NOT NULL,
    xid xid8 NOT NULL DEFAULT pg_current_xact_id()
);
CREATE INDEX token_cutoffs_xid ON token_cutoffs (xid);

-- Deactivating or deleting a user, or making or unmaking an admin, voids their tokens, whatever
-- does it: the API, the admin command, or an UPDATE typed into psql.
CREATE FUNCTION void_user_tokens() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO token_cutoffs (user_id, issued_before) VALUES (OLD.id, clock_timestamp())
    ON CONFLICT (user_id) DO UPDATE SET issued_before = excluded.issued_before, xid = excluded.xid;
    RETURN NULL;
END
$$;
CREATE TRIGGER users_void_tokens_on_change AFTER UPDATE OF is_active, is_admin ON users FOR EACH ROW
WHEN (OLD.is_active IS DISTINCT FROM NEW.is_active OR OLD.is_admin IS DISTINCT FROM NEW.is_admin)
EXECUTE FUNCTION void_user_tokens();
CREATE TRIGGER users_void_tokens_on_delete AFTER DELETE ON users FOR EACH ROW
EXECUTE FUNCTION void_user_tokens();

-- Failed sign-ins per key ('email:...' or 'address:...') since window_start (auth.py, Throttle).
CREATE TABLE sign_in_failures (
    key text PRIMARY KEY,
    window_start timestamptz NOT NULL,
    failures integer NOT NULL
);
CREATE INDEX sign_in_failures_window_start ON sign_in_failures (window_start);
