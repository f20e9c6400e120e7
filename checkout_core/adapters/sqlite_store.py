"""The storage port on SQLite: repositories over one connection, one transaction per use case."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from typing import TypeVar

from checkout_core.adapters.sqlite_db import SqliteDatabase
from checkout_core.domain import events as ev
from checkout_core.domain.cart import Cart
from checkout_core.domain.checkout import Address, Checkout, Order, Payment
from checkout_core.domain.pricing import Line, Totals
from checkout_core.service.ports import (
    IdempotencyRecord,
    OutboxEntry,
    OutboxLag,
    Outcome,
    PaymentLock,
    ShadowExpired,
    UnitOfWork,
)

T = TypeVar("T")


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


def from_iso(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _lines_json(lines: Sequence[Line]) -> str:
    return json.dumps([asdict(line) for line in lines])


def _lines(text: str) -> tuple[Line, ...]:
    return tuple(Line(**item) for item in json.loads(text))


class SqliteCarts:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def get(self, cart_id: str) -> Cart | None:
        row = self.conn.execute("SELECT * FROM carts WHERE id = ?", (cart_id,)).fetchone()
        if row is None:
            return None
        items = self.conn.execute(
            "SELECT sku, quantity FROM cart_items WHERE cart_id = ? ORDER BY position", (cart_id,)
        ).fetchall()
        return Cart(
            id=row["id"], country=row["country"], currency=row["currency"],
            status=row["status"], items=tuple((i["sku"], i["quantity"]) for i in items),
            shadow=bool(row["shadow"]),
        )

    def add(self, cart: Cart, now: datetime) -> None:
        self.conn.execute(
            "INSERT INTO carts (id, country, currency, status, created_at, updated_at, shadow)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (cart.id, cart.country, cart.currency, cart.status, iso(now), iso(now),
             int(cart.shadow)),
        )
        self._write_items(cart)

    def update(self, cart: Cart, now: datetime) -> None:
        self.conn.execute(
            "UPDATE carts SET status = ?, updated_at = ? WHERE id = ?",
            (cart.status, iso(now), cart.id),
        )
        self.conn.execute("DELETE FROM cart_items WHERE cart_id = ?", (cart.id,))
        self._write_items(cart)

    def _write_items(self, cart: Cart) -> None:
        self.conn.executemany(
            "INSERT INTO cart_items (cart_id, position, sku, quantity) VALUES (?, ?, ?, ?)",
            [(cart.id, pos, sku, qty) for pos, (sku, qty) in enumerate(cart.items)],
        )


class SqliteCheckouts:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def get(self, checkout_id: str) -> Checkout | None:
        row = self.conn.execute("SELECT * FROM checkouts WHERE id = ?", (checkout_id,)).fetchone()
        if row is None:
            return None
        return Checkout(
            id=row["id"], cart_id=row["cart_id"], email=row["email"],
            shipping_address=Address(**json.loads(row["shipping_address"])),
            country=row["country"], currency=row["currency"], lines=_lines(row["lines"]),
            promotion_code=row["promotion_code"],
            totals=Totals(row["subtotal"], row["discount"], row["tax"]), status=row["status"],
            shadow=bool(row["shadow"]),
        )

    def add(self, checkout: Checkout, now: datetime) -> None:
        self.conn.execute(
            "INSERT INTO checkouts (id, cart_id, status, email, shipping_address, country,"
            " currency, lines, promotion_code, subtotal, discount, tax, created_at, updated_at,"
            " shadow) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                checkout.id, checkout.cart_id, checkout.status, checkout.email,
                json.dumps(asdict(checkout.shipping_address)), checkout.country,
                checkout.currency, _lines_json(checkout.lines), checkout.promotion_code,
                checkout.totals.subtotal, checkout.totals.discount, checkout.totals.tax,
                iso(now), iso(now), int(checkout.shadow),
            ),
        )

    def update(self, checkout: Checkout, now: datetime) -> None:
        self.conn.execute(
            "UPDATE checkouts SET status = ?, updated_at = ? WHERE id = ?",
            (checkout.status, iso(now), checkout.id),
        )

    def payment_lock(self, checkout_id: str) -> PaymentLock | None:
        row = self.conn.execute(
            "SELECT payment_key, payment_lease_until FROM checkouts WHERE id = ?", (checkout_id,)
        ).fetchone()
        if row is None or row["payment_key"] is None:
            return None
        return PaymentLock(row["payment_key"], from_iso(row["payment_lease_until"]))

    def set_payment_lock(self, checkout_id: str, lock: PaymentLock | None) -> None:
        key, until = (lock.key, iso(lock.lease_until)) if lock else (None, None)
        self.conn.execute(
            "UPDATE checkouts SET payment_key = ?, payment_lease_until = ? WHERE id = ?",
            (key, until, checkout_id),
        )


class SqliteOrders:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def get(self, order_id: str) -> Order | None:
        row = self.conn.execute("SELECT * FROM orders WHERE id = ?", (order_id,)).fetchone()
        return None if row is None else self._order(row)

    def add(self, order: Order, idempotency_key: str) -> None:
        self.conn.execute(
            "INSERT INTO orders (id, checkout_id, status, currency, total, lines, email,"
            " payment_id, payment_status, payment_amount, idempotency_key, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                order.id, order.checkout_id, order.status, order.currency, order.total,
                _lines_json(order.lines), order.email, order.payment.id, order.payment.status,
                order.payment.amount, idempotency_key, iso(order.created_at),
            ),
        )

    @staticmethod
    def _order(row: sqlite3.Row) -> Order:
        payment = Payment(row["payment_id"], row["payment_status"], row["payment_amount"])
        return Order(
            id=row["id"], checkout_id=row["checkout_id"], currency=row["currency"],
            total=row["total"], lines=_lines(row["lines"]), email=row["email"],
            payment=payment, created_at=from_iso(row["created_at"]), status=row["status"],
        )


class SqliteIdempotency:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def claim(self, record: IdempotencyRecord) -> bool:
        cursor = self.conn.execute(
            "INSERT INTO idempotency_keys (key, fingerprint, checkout_id, owner, lease_until)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (key) DO NOTHING",
            (record.key, record.fingerprint, record.checkout_id, record.owner,
             iso(record.lease_until)),
        )
        return cursor.rowcount == 1

    def get(self, key: str) -> IdempotencyRecord | None:
        row = self.conn.execute("SELECT * FROM idempotency_keys WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        outcome = None
        if row["completed_at"] is not None:
            outcome = Outcome(row["order_id"], row["error_code"], row["detail"])
        return IdempotencyRecord(
            key=row["key"], fingerprint=row["fingerprint"], checkout_id=row["checkout_id"],
            owner=row["owner"], lease_until=from_iso(row["lease_until"]), outcome=outcome,
        )

    def take_over(self, key: str, owner: str, lease_until: datetime) -> None:
        self.conn.execute(
            "UPDATE idempotency_keys SET owner = ?, lease_until = ? WHERE key = ?",
            (owner, iso(lease_until), key),
        )

    def expire(self, key: str, now: datetime) -> None:
        self.conn.execute(
            "UPDATE idempotency_keys SET lease_until = ? WHERE key = ?", (iso(now), key)
        )

    def complete(self, key: str, outcome: Outcome, now: datetime) -> None:
        self.conn.execute(
            "UPDATE idempotency_keys SET order_id = ?, error_code = ?, detail = ?,"
            " completed_at = ? WHERE key = ?",
            (outcome.order_id, outcome.error_code, outcome.detail, iso(now), key),
        )


class SqliteOutbox:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def add(self, events: Sequence[ev.Event]) -> None:
        self.conn.executemany(
            "INSERT INTO outbox (event_id, type, idempotency_key, occurred_at, body)"
            " VALUES (?, ?, ?, ?, ?)",
            [(e.id, e.type, e.idempotency_key, iso(e.occurred_at), ev.encode(e)) for e in events],
        )

    def unpublished(self, limit: int) -> list[OutboxEntry]:
        rows = self.conn.execute(
            "SELECT seq, body FROM outbox WHERE published_at IS NULL ORDER BY seq LIMIT ?",
            (limit,),
        ).fetchall()
        return [OutboxEntry(row["seq"], ev.decode(row["body"])) for row in rows]

    def mark_published(self, seqs: Sequence[int], now: datetime) -> None:
        self.conn.executemany(
            "UPDATE outbox SET published_at = ? WHERE seq = ?", [(iso(now), s) for s in seqs]
        )

    def lag(self, now: datetime) -> OutboxLag:
        row = self.conn.execute(
            "SELECT count(*) AS n, min(occurred_at) AS oldest FROM outbox"
            " WHERE published_at IS NULL"
        ).fetchone()
        age = 0.0 if row["oldest"] is None else (now - from_iso(row["oldest"])).total_seconds()
        return OutboxLag(int(row["n"]), max(age, 0.0))


class SqliteShadow:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def expire(self, created_before: datetime, limit: int) -> ShadowExpired:
        # a shadow checkout never has an order; one that had would stay (and hold its cart)
        # rather than fail the batch on the foreign key, again at every sweep
        rows = self.conn.execute(
            "SELECT id FROM carts WHERE shadow = 1 AND created_at < ?"
            " AND NOT EXISTS (SELECT 1 FROM checkouts JOIN orders"
            "   ON orders.checkout_id = checkouts.id WHERE checkouts.cart_id = carts.id)"
            " ORDER BY created_at LIMIT ?",
            (iso(created_before), limit),
        ).fetchall()
        ids = [(row["id"],) for row in rows]
        if not ids:
            return ShadowExpired()
        checkouts = self.conn.executemany(
            "DELETE FROM checkouts WHERE cart_id = ? AND shadow = 1", ids).rowcount
        self.conn.executemany("DELETE FROM cart_items WHERE cart_id = ?", ids)
        carts = self.conn.executemany("DELETE FROM carts WHERE id = ? AND shadow = 1", ids).rowcount
        return ShadowExpired(carts, checkouts)


class SqliteUnitOfWork:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.carts = SqliteCarts(conn)
        self.checkouts = SqliteCheckouts(conn)
        self.orders = SqliteOrders(conn)
        self.idempotency = SqliteIdempotency(conn)
        self.outbox = SqliteOutbox(conn)
        self.shadow = SqliteShadow(conn)


class SqliteStore:
    """`Store` on a SQLite file."""

    def __init__(self, db: SqliteDatabase) -> None:
        self.db = db

    async def run(self, work: Callable[[UnitOfWork], T], *, write: bool = True) -> T:
        return await self.db.run(lambda conn: work(SqliteUnitOfWork(conn)), write=write)

    async def ping(self) -> None:
        await self.db.ping()


