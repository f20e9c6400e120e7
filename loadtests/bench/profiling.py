"""Profiling (optional, `--profile DIR`): py-spy on each Python proxy during an extra c=32
run, summarised as self and inclusive sample shares per function. py-spy pauses the
process for each sample (its default): with --nonblocking the stacks of a busy event loop
came out mixed (frames of one call under another's), enough to misplace a few percent."""

from __future__ import annotations

import math
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from loadtests.bench.common import C_MID, HarnessError, log
from loadtests.bench.load import PythonLoad, WrkLoad
from loadtests.bench.procs import Processes
from loadtests.bench.servers import Target


def summarize_collapsed(path: Path, top: int = 25) -> str:
    """Self and inclusive sample shares per function from py-spy's raw (collapsed) output."""
    self_samples: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [_frame_name(f) for f in stack.split(";")]
        self_samples[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    if not total:
        return "profile: no samples"
    out = [(f"profile: {total} samples; top self time (function (file)); time inside a C "
            "call (socket writes included) counts as its Python caller's self time:")]
    for name, n in self_samples.most_common(top):
        out.append(f"  {100 * n / total:5.1f}% self {100 * inclusive[name] / total:5.1f}% incl  "
                   f"{name}")
    return "\n".join(out)


def _frame_name(frame: str) -> str:
    # "function (path/to/file.py:123)" -> "function (to/file.py)"
    name, _, where = frame.partition(" (")
    where = where.rstrip(")").rsplit(":", 1)[0]
    parts = where.split("/")
    short = "/".join(parts[-2:]) if len(parts) > 1 else where
    return f"{name} ({short})"


def profile_target(load: WrkLoad | PythonLoad, target: Target, duration: float,
                   outdir: Path, procs: Processes) -> dict[str, Any] | None:
    spy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if spy is None or target.child is None:
        log("profile: py-spy not found (pip install py-spy), skipped")
        return None
    outdir.mkdir(parents=True, exist_ok=True)
    raw = outdir / f"{target.name}-c{C_MID}.txt"
    seconds = max(2, math.ceil(duration))
    child = procs.start("py-spy", [spy, "record", "--pid", str(target.child.proc.pid),
                                   "--duration", str(seconds), "--rate", "250", "--format", "raw",
                                   "--output", str(raw)])  # blocking: whole stacks
    time.sleep(0.5)
    load.run(target.port, C_MID, seconds + 0.5)
    try:
        child.proc.wait(seconds + 30)
    except subprocess.TimeoutExpired:
        log("profile: py-spy did not finish")
    procs.stop(child)
    if not raw.exists():
        log(f"profile: py-spy wrote nothing:\n{child.log_tail()}")
        return None
    text = summarize_collapsed(raw)
    return {"target": target.name, "file": str(raw), "text": f"{target.name} at c={C_MID}: "
            + text}


def profile_all(load: WrkLoad | PythonLoad, targets: list[Target], duration: float,
                outdir: Path, procs: Processes) -> list[dict[str, Any]]:
    """Profile every Python proxy (baseline, full, variants); a failure skips that one."""
    profiles: list[dict[str, Any]] = []
    for target in targets:
        if target.kind not in ("full", "baseline"):
            continue
        log(f"bench: profiling {target.name} at c={C_MID} with py-spy ...")
        try:
            found = profile_target(load, target, max(duration, 5.0), outdir, procs)
        except (OSError, HarnessError) as exc:
            log(f"profile: skipped: {exc}")
            continue
        if found is not None:
            profiles.append(found)
    return profiles
