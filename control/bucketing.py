"""Unleash-compatible normalized hash: the bucket of a unit within a funnel's salt."""

from __future__ import annotations

import mmh3

BUCKETS = 10_000


def normalized_hash(group: str, unit: str, modulo: int = BUCKETS, seed: int = 0) -> int:
    """murmur3_x86_32 of ``"group:unit"`` modulo `modulo` (0-based; Unleash adds 1)."""
    return int(mmh3.hash(f"{group}:{unit}", seed, signed=False)) % modulo


def bucket(salt: str, unit: str) -> int:
    """The unit's bucket 0..9999; the core serves it when bucket < basis points."""
    return normalized_hash(salt, unit)
