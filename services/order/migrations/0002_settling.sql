-- The settler of PENDING orders (src/settler.rs). The same SQL runs on
-- SQLite and PostgreSQL.

-- No settler takes the order before this time (unix millis): while one
-- replica settles it, the end of that replica's lease; after an attempt that
-- settled nothing, when the next may start. 0: any settler, at once.
ALTER TABLE orders ADD COLUMN settling_until_ms BIGINT NOT NULL DEFAULT 0;
-- How many times a settler has taken the order (for the logs).
ALTER TABLE orders ADD COLUMN settle_attempts BIGINT NOT NULL DEFAULT 0;

-- The settler's scan: PENDING orders, oldest first. Few rows: orders leave
-- the index when they are settled.
CREATE INDEX orders_pending ON orders (created_at_ms, id) WHERE status = 'PENDING';
