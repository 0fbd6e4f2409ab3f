-- Accounts that recover: a verified address, and the single-use links that verify one or reset a password.

-- Whether the user showed they receive mail at `email` (POST /auth/verify, or a completed reset).
ALTER TABLE users ADD COLUMN is_verified boolean NOT NULL DEFAULT false;

-- A link's token, kept as its SHA-256 alone: a copy of this table lets nobody in. Used once: using it
-- deletes it. `email` is the address the link was sent to, which is the address it verifies.
CREATE TABLE account_tokens (
    hash bytea PRIMARY KEY,
    purpose text NOT NULL CHECK (purpose IN ('verify', 'reset')),
    user_id bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    email text NOT NULL,
    expires_at timestamptz NOT NULL
);
CREATE INDEX account_tokens_user_id ON account_tokens (user_id);

-- A new password voids every reset link sent before it, and a new address every verification link and
-- the verified mark, whatever makes the change: a reset, PATCH /users/me, the admin command, psql.
CREATE FUNCTION void_account_tokens() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.password_hash IS DISTINCT FROM NEW.password_hash THEN
        DELETE FROM account_tokens WHERE user_id = OLD.id AND purpose = 'reset';
    END IF;
    IF lower(OLD.email) IS DISTINCT FROM lower(NEW.email) THEN
        DELETE FROM account_tokens WHERE user_id = OLD.id AND purpose = 'verify';
        NEW.is_verified := false;
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER users_void_account_tokens BEFORE UPDATE OF password_hash, email ON users FOR EACH ROW
EXECUTE FUNCTION void_account_tokens();
