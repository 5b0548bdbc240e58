-- Charges, each with the idempotency key that made it. A key belongs to
-- exactly one charge and a charge to exactly one key, so they share a row:
-- the key's UNIQUE constraint is what makes a second charge for a key
-- impossible, whichever process or connection tries. Money is integer
-- micros (10^-6 of a unit), times are unix milliseconds.

CREATE TABLE charges (
    -- Creation order (the list's order); never reused while newer rows exist.
    seq               INTEGER PRIMARY KEY,
    id                TEXT    NOT NULL UNIQUE,
    idempotency_key   TEXT    NOT NULL UNIQUE,
    status            TEXT    NOT NULL CHECK (status IN ('succeeded', 'failed')),
    order_id          TEXT    NOT NULL,
    amount_micros     INTEGER NOT NULL CHECK (amount_micros > 0),
    currency          TEXT    NOT NULL,
    customer_id       TEXT    NOT NULL,
    created_at_ms     INTEGER NOT NULL,
    failure_code      TEXT,
    failure_message   TEXT,
    -- The provider pod that made the charge (served_by), kept so a replay
    -- after a restart answers exactly as the first time.
    served_by_service   TEXT NOT NULL,
    served_by_version   TEXT NOT NULL,
    served_by_pod       TEXT NOT NULL,
    served_by_node      TEXT NOT NULL,
    served_by_zone      TEXT NOT NULL,
    served_by_namespace TEXT NOT NULL,
    -- A declined charge says why; a successful one has no failure.
    CHECK ((status = 'failed') = (failure_code IS NOT NULL))
) STRICT;

-- GET /v1/charges?order_id=…, oldest first.
CREATE INDEX charges_by_order ON charges (order_id, seq);
-- The purge: the oldest keys first.
CREATE INDEX charges_by_age ON charges (created_at_ms);
