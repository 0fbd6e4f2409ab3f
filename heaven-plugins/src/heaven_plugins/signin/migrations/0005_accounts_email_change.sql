-- A change of address (POST /auth/email-change): its link is an account token of purpose 'email', sent to the
-- new address, which completing it makes the user's. A file of its own, not an edit of 0005_accounts.sql: a
-- database that has that one applied still gets this. Its name sorts right after it, before a project's 0006.

ALTER TABLE account_tokens DROP CONSTRAINT account_tokens_purpose_check;
ALTER TABLE account_tokens ADD CONSTRAINT account_tokens_purpose_check
    CHECK (purpose IN ('verify', 'reset', 'email'));

-- A new password voids every reset and address-change link sent before it; a new address every link (a
-- reset link to the old address must not outlive it) and the verified mark; a deactivation every link,
-- so none works again after a reactivation: whatever makes the change, a reset, an address change,
-- PATCH /users/me, PATCH /users/:id, the admin command, psql.
CREATE OR REPLACE FUNCTION void_account_tokens() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.is_active AND NOT NEW.is_active THEN
        DELETE FROM account_tokens WHERE user_id = OLD.id;
    END IF;
    IF OLD.password_hash IS DISTINCT FROM NEW.password_hash THEN
        DELETE FROM account_tokens WHERE user_id = OLD.id AND purpose IN ('reset', 'email');
    END IF;
    IF lower(OLD.email) IS DISTINCT FROM lower(NEW.email) THEN
        DELETE FROM account_tokens WHERE user_id = OLD.id AND purpose IN ('verify', 'reset', 'email');
        NEW.is_verified := false;
    END IF;
    RETURN NEW;
END
$$;
DROP TRIGGER users_void_account_tokens ON users;
CREATE TRIGGER users_void_account_tokens BEFORE UPDATE OF password_hash, email, is_active ON users FOR EACH ROW
EXECUTE FUNCTION void_account_tokens();
