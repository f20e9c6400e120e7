"""Three-way merge of rules: an edit of the watched file on top of the active rules.

The file and the CLI both change the rules: a release manager edits the file (GitOps), the
CLI ramps a percentage, a staged rollout moves a step. Applying the file as it is would
silently undo every CLI change since the file was last imported. Instead an edit is applied
as the change between the last imported file (`base`) and the new file (`theirs`), on top
of the active rules (`ours`):

- the slots compared are each top-level key but `funnels`; each key of a funnel but
  `rules` (by funnel name); each rule as a whole (by funnel name and rule id); and the
  order of funnels and of each funnel's rules (first match wins, so order is routing);
- a slot the edit did not change keeps the active value (the CLI's ramp stays);
- a slot the edit changed takes the file's value where the active value is still the
  base's, or already the file's;
- a slot changed both ways, differently, is a conflict: the whole edit is refused and each
  conflict names the slot, the file's value and the active value.

Pure: plain data in (what `yaml.safe_load` gives), plain data out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Data = dict[str, Any]
MISSING: Any = object()


@dataclass(frozen=True, slots=True)
class Conflict:
    slot: str  # e.g. "funnels[warranties].rules[ie]"
    file_value: Any
    active_value: Any

    def sentence(self) -> str:
        return (f"{self.slot}: the file says {_show(self.file_value)}, the active rules say "
                f"{_show(self.active_value)} (changed since the last import)")


@dataclass(frozen=True, slots=True)
class MergeResult:
    data: Data
    conflicts: tuple[Conflict, ...] = field(default_factory=tuple)


def _show(value: Any) -> str:
    return "(absent)" if value is MISSING else repr(value)


def _pick(slot: str, base: Any, theirs: Any, ours: Any, conflicts: list[Conflict]) -> Any:
    if theirs == base or theirs == ours:
        return ours
    if ours == base:
        return theirs
    conflicts.append(Conflict(slot, theirs, ours))
    return ours


def _named(items: Any, key: str) -> dict[str, Any]:
    if not isinstance(items, list):
        return {}
    return {str(i[key]): i for i in items if isinstance(i, dict) and key in i}


def _merge_order(slot: str, base: list[str], theirs: list[str], ours: list[str],
                 conflicts: list[Conflict]) -> list[str]:
    """Ours, less what the edit removed, plus what it added (after its predecessor in the
    file); a reordering by the edit applies unless the active order was reordered too."""
    out = [i for i in ours if not (i in base and i not in theirs)]
    for n, item in enumerate(theirs):
        if item in out or item in base:
            continue
        before = next((p for p in reversed(theirs[:n]) if p in out), None)
        out.insert(out.index(before) + 1 if before is not None else 0, item)
    common = [i for i in base if i in theirs and i in ours]
    file_order = [i for i in theirs if i in common]
    active_order = [i for i in ours if i in common]
    if file_order != common:
        if active_order != common and active_order != file_order:
            conflicts.append(Conflict(slot, file_order, active_order))
            return out
        slots = iter(file_order)
        out = [next(slots) if i in common else i for i in out]
    return out


def _merge_named(slot: str, key: str, base: Any, theirs: Any, ours: Any,
                 conflicts: list[Conflict], inner: Any) -> list[Any]:
    """Merge lists of dicts identified by `key`; `inner` merges one item's three versions."""
    b, t, o = _named(base, key), _named(theirs, key), _named(ours, key)
    merged: dict[str, Any] = {}
    for name in {**b, **t, **o}:
        value = inner(f"{slot}[{name}]", b.get(name, MISSING), t.get(name, MISSING),
                      o.get(name, MISSING), conflicts)
        if value is not MISSING:
            merged[name] = value
    order = _merge_order(f"{slot} order", list(b), list(t), list(o), conflicts)
    return [merged[name] for name in order if name in merged]


def _merge_rule(slot: str, base: Any, theirs: Any, ours: Any,
                conflicts: list[Conflict]) -> Any:
    return _pick(slot, base, theirs, ours, conflicts)


def _merge_funnel(slot: str, base: Any, theirs: Any, ours: Any,
                  conflicts: list[Conflict]) -> Any:
    if MISSING in (base, theirs, ours) or not all(isinstance(x, dict)
                                                   for x in (base, theirs, ours)):
        return _pick(slot, base, theirs, ours, conflicts)  # added, removed: as a whole
    out: Data = {}
    for k in {**base, **theirs, **ours}:
        if k == "rules":
            continue
        value = _pick(f"{slot}.{k}", base.get(k, MISSING), theirs.get(k, MISSING),
                      ours.get(k, MISSING), conflicts)
        if value is not MISSING:
            out[k] = value
    out["rules"] = _merge_named(f"{slot}.rules", "id", base.get("rules"), theirs.get("rules"),
                                ours.get("rules"), conflicts, _merge_rule)
    return out


def merge_rules(base: Data, theirs: Data, ours: Data) -> MergeResult:
    """Apply the change from `base` to `theirs` on top of `ours`."""
    conflicts: list[Conflict] = []
    out: Data = {}
    for k in {**base, **theirs, **ours}:
        if k == "funnels":
            continue
        value = _pick(k, base.get(k, MISSING), theirs.get(k, MISSING), ours.get(k, MISSING),
                      conflicts)
        if value is not MISSING:
            out[k] = value
    out["funnels"] = _merge_named("funnels", "name", base.get("funnels"),
                                  theirs.get("funnels"), ours.get("funnels"), conflicts,
                                  _merge_funnel)
    return MergeResult(out, tuple(conflicts))


def _slots(data: Data) -> dict[str, Any]:
    """Every slot of the rules (as the merge compares them) with its value."""
    out: dict[str, Any] = {k: v for k, v in data.items() if k != "funnels"}
    funnels = _named(data.get("funnels"), "name")
    out["funnels order"] = list(funnels)
    for name, funnel in funnels.items():
        slot = f"funnels[{name}]"
        out.update({f"{slot}.{k}": v for k, v in funnel.items() if k != "rules"})
        rules = _named(funnel.get("rules"), "id")
        out[f"{slot}.rules order"] = list(rules)
        out.update({f"{slot}.rules[{rid}]": rule for rid, rule in rules.items()})
    return out


def drift(base: Data, ours: Data) -> list[str]:
    """The slots where the active rules (`ours`) differ from the last imported file."""
    a, b = _slots(base), _slots(ours)
    return [slot for slot in {**a, **b} if a.get(slot, MISSING) != b.get(slot, MISSING)]
