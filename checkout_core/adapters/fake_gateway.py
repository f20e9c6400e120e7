"""A payment gateway that behaves like a real provider, with a ledger that outlives the core.

It has latency; it declines `tok_decline` always and other tokens at the configured rate; it
times out before charging; and it has unknown outcomes: it charges, then the caller times out.
Like Stripe, by default it remembers each idempotency key and answers a repeated `authorize`
with the first result; `honours_idempotency_keys=False` makes it a naive provider that charges
again, which is how the tests prove the core never relies on that.

Its ledger (every charge, by idempotency key) is the provider's, not the core's: with
`SqliteLedger` it is a SQLite file of its own, so a restarted core, or a second core process,
finds the payments an earlier one made (`lookup`), as it would at a real provider. Each
charge is one write transaction (`BEGIN IMMEDIATE`): "is there a charge for this key? if
not, charge" cannot interleave across processes. `MemoryLedger` is the same ledger in this
process only, for tests that want no file.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal, Protocol

from checkout_core.adapters.sqlite_db import SqliteDatabase, Synchronous
from checkout_core.ids import PAYMENT, new_id
from checkout_core.service.ports import (
    ChargeRequest,
    GatewayTimeout,
    GatewayUnavailable,
    PaymentResult,
)

Fault = Literal["timeout", "charge_then_timeout", "unavailable"]
DECLINE_TOKEN = "tok_decline"
IN_MEMORY = ":memory:"


@dataclass(frozen=True, slots=True)
class FakeGatewayConfig:
    latency_seconds: float = 0.0
    decline_rate: float = 0.0
    timeout_rate: float = 0.0
    unknown_rate: float = 0.0
    timeout_seconds: float = 0.05
    """How long a simulated timeout keeps the caller waiting."""
    honours_idempotency_keys: bool = True


@dataclass(frozen=True, slots=True)
class Charge:
    idempotency_key: str
    result: PaymentResult
    replays: int = 0
    """How many later `authorize` calls with this key were answered with this charge."""


# --- the ledger ---------------------------------------------------------------------------


class Ledger(Protocol):
    async def charge(
        self, key: str, decide: Callable[[], PaymentResult], *, dedupe: bool
    ) -> PaymentResult:
        """Atomically: with `dedupe`, the first charge for `key` if there is one (counted as a
        replay); otherwise `decide()`, recorded as a new charge for `key`."""
        ...

    async def find(self, key: str) -> PaymentResult | None:
        """The first charge made for `key`, if any."""
        ...

    def charges(self) -> list[Charge]:
        """Every charge, oldest first (for tests and inspection)."""
        ...


class MemoryLedger:
    """The ledger in this process; gone when it ends."""

    def __init__(self) -> None:
        self._charges: list[Charge] = []

    async def charge(
        self, key: str, decide: Callable[[], PaymentResult], *, dedupe: bool
    ) -> PaymentResult:
        if dedupe:
            for i, charge in enumerate(self._charges):
                if charge.idempotency_key == key:
                    self._charges[i] = replace(charge, replays=charge.replays + 1)
                    return charge.result
        result = decide()
        self._charges.append(Charge(key, result))
        return result

    async def find(self, key: str) -> PaymentResult | None:
        return next((c.result for c in self._charges if c.idempotency_key == key), None)

    def charges(self) -> list[Charge]:
        return list(self._charges)


LEDGER_SCHEMA = """
CREATE TABLE IF NOT EXISTS gateway_charges (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,
    idempotency_key  TEXT NOT NULL,
    payment_id       TEXT NOT NULL UNIQUE,
    status           TEXT NOT NULL CHECK (status IN ('authorized', 'declined')),
    amount           INTEGER NOT NULL,
    currency         TEXT NOT NULL,
    decline_reason   TEXT,
    replays          INTEGER NOT NULL DEFAULT 0,
    created_at       TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE INDEX IF NOT EXISTS gateway_charges_by_key ON gateway_charges (idempotency_key, seq);
"""
_COLUMNS = "seq, idempotency_key, payment_id, status, amount, currency, decline_reason, replays"


def _charge_of(row: sqlite3.Row) -> Charge:
    result = PaymentResult(row["payment_id"], row["status"], row["amount"], row["currency"],
                           row["decline_reason"])
    return Charge(row["idempotency_key"], result, row["replays"])


def _first(conn: sqlite3.Connection, key: str) -> sqlite3.Row | None:
    row: sqlite3.Row | None = conn.execute(
        f"SELECT {_COLUMNS} FROM gateway_charges WHERE idempotency_key = ? ORDER BY seq LIMIT 1",
        (key,)).fetchone()
    return row


class SqliteLedger:
    """The ledger in a SQLite file of its own (WAL), shared by every process that opens it."""

    def __init__(self, db: SqliteDatabase) -> None:
        self.db = db

    @classmethod
    def open(cls, path: Path, busy_timeout_ms: int = 5000,
             synchronous: Synchronous = "FULL") -> SqliteLedger:
        """Create the file and its table if missing (idempotent)."""
        db = SqliteDatabase(path, busy_timeout_ms, synchronous)
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = db.connect()
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(LEDGER_SCHEMA)
        finally:
            conn.close()
        return cls(db)

    @property
    def path(self) -> Path:
        return self.db.path

    async def charge(
        self, key: str, decide: Callable[[], PaymentResult], *, dedupe: bool
    ) -> PaymentResult:
        def work(conn: sqlite3.Connection) -> PaymentResult:
            if dedupe and (row := _first(conn, key)) is not None:
                conn.execute("UPDATE gateway_charges SET replays = replays + 1 WHERE seq = ?",
                             (row["seq"],))
                return _charge_of(row).result
            result = decide()
            conn.execute(
                "INSERT INTO gateway_charges (idempotency_key, payment_id, status, amount,"
                " currency, decline_reason) VALUES (?, ?, ?, ?, ?, ?)",
                (key, result.payment_id, result.status, result.amount, result.currency,
                 result.decline_reason))
            return result

        return await self.db.run(work)

    async def find(self, key: str) -> PaymentResult | None:
        row = await self.db.run(lambda conn: _first(conn, key), write=False)
        return None if row is None else _charge_of(row).result

    def charges(self) -> list[Charge]:
        rows = self.db.transaction(lambda conn: conn.execute(
            f"SELECT {_COLUMNS} FROM gateway_charges ORDER BY seq").fetchall(), write=False)
        return [_charge_of(row) for row in rows]


def open_ledger(path: Path | str | None, busy_timeout_ms: int = 5000,
                synchronous: Synchronous = "FULL") -> Ledger:
    """`SqliteLedger` on `path`; `MemoryLedger` when `path` is None or ":memory:"."""
    if path is None or str(path) == IN_MEMORY:
        return MemoryLedger()
    return SqliteLedger.open(Path(path), busy_timeout_ms, synchronous)


# --- the gateway --------------------------------------------------------------------------


class FakeGateway:
    def __init__(
        self,
        config: FakeGatewayConfig | None = None,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        ledger: Ledger | None = None,
    ) -> None:
        self.config = config or FakeGatewayConfig()
        self.rng = rng or random.Random()
        self.sleep = sleep
        self.ledger: Ledger = ledger if ledger is not None else MemoryLedger()
        self.faults: deque[Fault | None] = deque()
        # the calls this instance received; the ledger holds the charges of every instance
        self.authorize_calls: list[str] = []
        self.lookup_calls: list[str] = []

    @property
    def charges(self) -> list[Charge]:
        return self.ledger.charges()

    @property
    def decline_rate(self) -> float:
        """The share of charges declined besides `tok_decline`; fault drills change it."""
        return self.config.decline_rate

    @decline_rate.setter
    def decline_rate(self, rate: float) -> None:
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"a decline rate is a probability in [0, 1], not {rate}")
        self.config = replace(self.config, decline_rate=rate)

    def script(self, *faults: Fault | None) -> None:
        """Queue faults for the next `authorize` calls (None: behave normally), before rates."""
        self.faults.extend(faults)

    def authorized(self) -> list[Charge]:
        return [c for c in self.charges if c.result.status == "authorized"]

    async def authorize(self, request: ChargeRequest) -> PaymentResult:
        self.authorize_calls.append(request.idempotency_key)
        await self.sleep(self.config.latency_seconds)
        fault = self._next_fault()
        if fault == "unavailable":
            raise GatewayUnavailable("gateway refused the connection")
        if fault == "timeout":
            await self.sleep(self.config.timeout_seconds)
            raise GatewayTimeout("gateway did not answer")
        result = await self.ledger.charge(
            request.idempotency_key, lambda: self._decide(request),
            dedupe=self.config.honours_idempotency_keys)
        if fault == "charge_then_timeout":
            await self.sleep(self.config.timeout_seconds)
            raise GatewayTimeout("gateway did not answer")
        return result

    async def lookup(self, idempotency_key: str) -> PaymentResult | None:
        self.lookup_calls.append(idempotency_key)
        await self.sleep(self.config.latency_seconds)
        return await self.ledger.find(idempotency_key)

    def _next_fault(self) -> Fault | None:
        if self.faults:
            return self.faults.popleft()
        draw = self.rng.random()
        if draw < self.config.timeout_rate:
            return "timeout"
        if draw < self.config.timeout_rate + self.config.unknown_rate:
            return "charge_then_timeout"
        return None

    def _decide(self, request: ChargeRequest) -> PaymentResult:
        reason = None
        if request.token == DECLINE_TOKEN:
            reason = "card_declined"
        elif self.rng.random() < self.config.decline_rate:
            reason = "insufficient_funds"
        status: Literal["authorized", "declined"] = "declined" if reason else "authorized"
        return PaymentResult(new_id(PAYMENT), status, request.amount, request.currency, reason)
