"""A replica's last known control state: what it routes with when the store is lost, and
what a restore writes back.

It holds the store's identity, the active rules version (text and number), the kill
switches with who set them and why, and the newest audit entries the replica has seen (the
audit log survives a store loss through these copies). It is kept in memory and, when a
path is configured (`STRANGLER_STATE_CACHE`), in a JSON file written atomically on every
change, so that a replica restarted while the store is empty still knows what it had.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
import uuid
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from control.store import AuditEntry, KillSwitch, RestoreState, RulesVersion, StoreIdentity

log = logging.getLogger("strangler.watcher")

AUDIT_KEPT = 1000


def _audit_key(e: AuditEntry) -> tuple[float, str, str, str, str]:
    return e.at, e.actor, e.action, e.target, e.reason


@dataclass
class LastKnown:
    generation: str | None = None
    rules: RulesVersion | None = None
    kills: dict[str, KillSwitch] = field(default_factory=dict)
    audit: deque[AuditEntry] = field(default_factory=lambda: deque(maxlen=AUDIT_KEPT))

    def remember_audit(self, entries: list[AuditEntry]) -> bool:
        """Add entries not seen yet (newest first, as the store lists them); True if any."""
        seen = {_audit_key(e) for e in self.audit}
        new = [e for e in reversed(entries) if _audit_key(e) not in seen]
        self.audit.extend(new)
        return bool(new)

    def restore_state(self, now: float | None = None) -> RestoreState:
        identity = StoreIdentity(uuid.uuid4().hex, time.time() if now is None else now,
                                 restored_from=self.generation)
        return RestoreState(identity, self.rules, tuple(self.kills.values()), tuple(self.audit))

    def to_json(self) -> str:
        return json.dumps({
            "generation": self.generation,
            "rules": asdict(self.rules) if self.rules is not None else None,
            "kills": [asdict(k) for k in self.kills.values()],
            "audit": [asdict(e) for e in self.audit],
            "written_at": time.time(),
        })

    @classmethod
    def from_json(cls, raw: str) -> LastKnown:
        data: dict[str, Any] = json.loads(raw)
        rules = data.get("rules")
        return cls(
            generation=data.get("generation"),
            rules=RulesVersion(**rules) if rules else None,
            kills={k["scope"]: KillSwitch(**k) for k in data.get("kills", [])},
            audit=deque((AuditEntry(**e) for e in data.get("audit", [])), maxlen=AUDIT_KEPT),
        )


class StateCache:
    """The last known state in a file (or nowhere, with no path)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._warned = False

    def load(self) -> LastKnown:
        if self.path is None or not self.path.exists():
            return LastKnown()
        try:
            return LastKnown.from_json(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError, TypeError, KeyError) as exc:
            log.error("last known state %s unreadable, starting without it: %s", self.path, exc)
            return LastKnown()

    def save(self, state: LastKnown) -> None:
        if self.path is None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".last-known-")
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(state.to_json())
            os.replace(tmp, self.path)
            self._warned = False
        except OSError as exc:
            if not self._warned:  # once per failure streak: the state stays in memory
                log.warning("last known state not written to %s: %s", self.path, exc)
                self._warned = True
