from __future__ import annotations

import json
from pathlib import Path

import pytest

from control.bucketing import BUCKETS, bucket, normalized_hash

# Published Unleash test values, kept with the tests (tests/data) and pinned below as well.
VECTORS = json.loads(
    (Path(__file__).resolve().parents[1] / "data" / "unleash-normalized-hash.json").read_text()
)["vectors"]

PINNED = [
    ("Feature.flexibleRollout.10", "174", 0, 100, 10),
    ("Feature.flexibleRollout.10", "499", 0, 100, 32),
    ("gr1", "123", 86028157, 100, 96),
    ("groupX", "999", 86028157, 100, 60),
]


@pytest.mark.parametrize(("group", "unit", "seed", "mod", "normalized"), PINNED)
def test_normalized_hash_matches_published_unleash_values(group, unit, seed, mod, normalized):
    assert normalized_hash(group, unit, mod, seed) + 1 == normalized


def test_published_vectors_agree_with_the_pinned_table():
    assert len(VECTORS) >= len(PINNED)
    for v in VECTORS:
        assert (v["group"], v["id"], v["seed"], v["mod"], v["normalized"]) in PINNED


def test_bucket_is_the_seed_zero_hash_modulo_10000():
    assert bucket("Feature.flexibleRollout.10", "174") == normalized_hash(
        "Feature.flexibleRollout.10", "174", 10_000
    )
    # Unleash's 10% rollout: user 174 is in (normalized 10 <= 10), 499 is out.
    assert bucket("Feature.flexibleRollout.10", "174") % 100 < 10
    assert bucket("Feature.flexibleRollout.10", "499") % 100 >= 10


def test_buckets_spread_evenly_over_the_range():
    counts = [0] * 10
    for i in range(20_000):
        counts[bucket("salt", f"unit-{i}") * 10 // BUCKETS] += 1
    assert all(1800 < c < 2200 for c in counts), counts


def test_bucket_depends_on_the_salt():
    same = sum(bucket("a", f"u{i}") == bucket("b", f"u{i}") for i in range(1000))
    assert same < 10
