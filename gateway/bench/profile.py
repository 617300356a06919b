"""A top list from py-spy's raw (collapsed) output: for each function, the share of samples in
which it is on the stack (inclusive) and at the top (self). Used for docs/performance.md and by
`cmr-gateway-bench --profile`, which records the gateway under closed-loop load."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path

_LINE = re.compile(r"^(?P<stack>.*) (?P<count>\d+)$")
_FRAME_LINE = re.compile(r":\d+\)$")


def _frame(raw: str) -> str:
    # "name (path/to/file.py:123)" -> "name (path/to/file.py)": one row per function.
    return _FRAME_LINE.sub(")", raw.strip())


def top(collapsed: str, n: int = 25) -> tuple[int, list[tuple[str, float, float]]]:
    """(samples, [(function, inclusive %, self %)]) sorted by inclusive share."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in collapsed.splitlines():
        m = _LINE.match(line)
        if not m:
            continue
        count = int(m["count"])
        frames = [_frame(f) for f in m["stack"].split(";") if f.strip()]
        # py-spy prefixes a thread's stack with "process ..."/"thread ..." pseudo-frames when
        # asked; a function appearing twice in one stack (recursion) is counted once.
        frames = [f for f in frames if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        total += count
        for f in set(frames):
            inclusive[f] += count
        own[frames[-1]] += count
    rows = (
        [
            (name, 100 * inclusive[name] / total, 100 * own[name] / total)
            for name, _ in inclusive.most_common(n)
        ]
        if total
        else []
    )
    return total, rows


def event_loop_only(collapsed: str) -> str:
    """The samples of the thread that runs the event loop: the gateway's one busy thread
    (the database driver's threads mostly wait for it or for SQLite)."""
    return "\n".join(line for line in collapsed.splitlines() if "run_forever" in line)


def markdown(collapsed: str, n: int = 25) -> str:
    everything, _ = top(collapsed, 1)
    loop = event_loop_only(collapsed)
    total, rows = top(loop, n)
    lines = [
        f"{total} samples of the event-loop thread ({everything} of all threads); "
        "share of those samples with the function on the stack, and at its top:",
        "",
        "| function | on stack | self |",
        "|---|---:|---:|",
    ]
    lines += [f"| `{name}` | {inc:.1f}% | {own:.1f}% |" for name, inc, own in rows]
    return "\n".join(lines)


def py_spy() -> str | None:
    return shutil.which("py-spy")


def record(pid: int, seconds: float, out: Path, rate: int = 200) -> subprocess.Popen[bytes]:
    """Start py-spy on `pid` (it runs for `seconds` and stops by itself)."""
    exe = py_spy()
    if exe is None:
        raise RuntimeError("py-spy is not installed")
    return subprocess.Popen(
        [
            exe,
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(max(1, round(seconds))),
            "--rate",
            str(rate),
            "--format",
            "raw",
            "--output",
            str(out),
            "--nonblocking",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
