-- Orders and their lines. The same SQL runs on SQLite and PostgreSQL:
-- money is BIGINT micros (10^-6 of a unit), times are BIGINT unix millis,
-- enums are TEXT with CHECK constraints.

CREATE TABLE orders (
    id                TEXT    NOT NULL PRIMARY KEY,
    -- One order per key, enforced here: concurrent retries race on this
    -- constraint, never on a read-then-insert.
    idempotency_key   TEXT    NOT NULL UNIQUE,
    -- SHA-256 of the normalised request, to tell a retry from a reuse.
    request_hash      TEXT    NOT NULL,
    customer_id       TEXT    NOT NULL,
    status            TEXT    NOT NULL CHECK (status IN ('PENDING', 'PAID', 'PAYMENT_FAILED')),
    currency          TEXT    NOT NULL,
    total_micros      BIGINT  NOT NULL CHECK (total_micros >= 0),
    payment_reference TEXT    NOT NULL DEFAULT '',
    failure_reason    TEXT    NOT NULL DEFAULT '',
    created_at_ms     BIGINT  NOT NULL,
    updated_at_ms     BIGINT  NOT NULL,
    -- No PAID order without a charge, no failure without a reason.
    CHECK (status <> 'PAID' OR payment_reference <> ''),
    CHECK (status <> 'PAYMENT_FAILED' OR failure_reason <> '')
);

-- ListOrders: a customer's orders, newest first.
CREATE INDEX orders_by_customer ON orders (customer_id, created_at_ms, id);

CREATE TABLE order_lines (
    order_id           TEXT   NOT NULL REFERENCES orders (id),
    line_no            BIGINT NOT NULL,
    product_id         TEXT   NOT NULL,
    product_name       TEXT   NOT NULL,
    quantity           BIGINT NOT NULL CHECK (quantity BETWEEN 1 AND 1000),
    unit_price_micros  BIGINT NOT NULL CHECK (unit_price_micros >= 0),
    line_total_micros  BIGINT NOT NULL CHECK (line_total_micros = quantity * unit_price_micros),
    -- The ProductService workload that priced the line (ServedBy).
    priced_by_service   TEXT NOT NULL,
    priced_by_version   TEXT NOT NULL,
    priced_by_pod       TEXT NOT NULL,
    priced_by_node      TEXT NOT NULL,
    priced_by_zone      TEXT NOT NULL,
    priced_by_namespace TEXT NOT NULL,
    PRIMARY KEY (order_id, line_no)
);
