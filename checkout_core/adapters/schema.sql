-- checkout_core embedded store (SQLite, WAL). Times are ISO 8601 UTC text unless named *_epoch.
-- Columns added after a table was first released are also in sqlite_db.ADDED_COLUMNS, which
-- adds them to the tables of an older file before this script runs.
CREATE TABLE IF NOT EXISTS carts (
    id          TEXT PRIMARY KEY,
    country     TEXT NOT NULL,
    currency    TEXT NOT NULL,
    status      TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    shadow      INTEGER NOT NULL DEFAULT 0   -- 1: created by a shadow request (X-Checkout-Shadow)
);
CREATE INDEX IF NOT EXISTS carts_shadow_created ON carts(created_at) WHERE shadow = 1;
CREATE TABLE IF NOT EXISTS cart_items (
    cart_id   TEXT NOT NULL REFERENCES carts(id),
    position  INTEGER NOT NULL,
    sku       TEXT NOT NULL,
    quantity  INTEGER NOT NULL,
    PRIMARY KEY (cart_id, sku)
);
CREATE TABLE IF NOT EXISTS checkouts (
    id                   TEXT PRIMARY KEY,
    cart_id              TEXT NOT NULL UNIQUE REFERENCES carts(id),
    status               TEXT NOT NULL,
    email                TEXT NOT NULL,
    shipping_address     TEXT NOT NULL,
    country              TEXT NOT NULL,
    currency             TEXT NOT NULL,
    lines                TEXT NOT NULL,
    promotion_code       TEXT,
    subtotal             INTEGER NOT NULL,
    discount             INTEGER NOT NULL,
    tax                  INTEGER NOT NULL,
    payment_key          TEXT,
    payment_lease_until  TEXT,
    created_at           TEXT NOT NULL,
    updated_at           TEXT NOT NULL,
    shadow               INTEGER NOT NULL DEFAULT 0   -- 1: created from a shadow cart
);
CREATE TABLE IF NOT EXISTS orders (
    id               TEXT PRIMARY KEY,
    checkout_id      TEXT NOT NULL UNIQUE REFERENCES checkouts(id),
    status           TEXT NOT NULL,
    currency         TEXT NOT NULL,
    total            INTEGER NOT NULL,
    lines            TEXT NOT NULL,
    email            TEXT NOT NULL,
    payment_id       TEXT NOT NULL,
    payment_status   TEXT NOT NULL,
    payment_amount   INTEGER NOT NULL,
    idempotency_key  TEXT NOT NULL,
    created_at       TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS idempotency_keys (
    key           TEXT PRIMARY KEY,
    fingerprint   TEXT NOT NULL,
    checkout_id   TEXT NOT NULL,
    owner         TEXT NOT NULL,
    lease_until   TEXT NOT NULL,
    order_id      TEXT,
    error_code    TEXT,
    detail        TEXT NOT NULL DEFAULT '',
    completed_at  TEXT
);
CREATE TABLE IF NOT EXISTS outbox (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id         TEXT NOT NULL UNIQUE,
    type             TEXT NOT NULL,
    idempotency_key  TEXT NOT NULL,
    occurred_at      TEXT NOT NULL,
    body             TEXT NOT NULL,
    published_at     TEXT
);
CREATE INDEX IF NOT EXISTS outbox_unpublished ON outbox(seq) WHERE published_at IS NULL;

-- The embedded event stream: an append-only log with consumer groups, modelled on Redis Streams.
CREATE TABLE IF NOT EXISTS stream_messages (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id         TEXT NOT NULL,
    body             TEXT NOT NULL,
    added_epoch      REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS stream_groups (
    name      TEXT PRIMARY KEY,
    last_seq  INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS stream_pending (
    group_name       TEXT NOT NULL,
    seq              INTEGER NOT NULL,
    consumer         TEXT NOT NULL,
    delivered_epoch  REAL NOT NULL,
    deliveries       INTEGER NOT NULL,
    PRIMARY KEY (group_name, seq)
);
CREATE TABLE IF NOT EXISTS processed_messages (
    group_name       TEXT NOT NULL,
    idempotency_key  TEXT NOT NULL,
    processed_at     TEXT NOT NULL,
    PRIMARY KEY (group_name, idempotency_key)
);
CREATE TABLE IF NOT EXISTS dead_letters (
    id           TEXT PRIMARY KEY,
    group_name   TEXT NOT NULL,
    message_id   TEXT NOT NULL,
    body         TEXT NOT NULL,
    error        TEXT NOT NULL,
    attempts     INTEGER NOT NULL,
    parked_at    TEXT NOT NULL,
    replayed_at  TEXT
);
CREATE INDEX IF NOT EXISTS dead_letters_waiting ON dead_letters(parked_at) WHERE replayed_at IS NULL;
