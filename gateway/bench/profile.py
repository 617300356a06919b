"""A top list from py-spy's raw (collapsed) output: for each function, the share of samples in
which it is on the stack (inclusive) and at the top (self). Used for docs/performance.md and by
`cmr-gateway-bench --profile`, which records the gateway under closed-loop load."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

_LINE = re.compile(r"^(?P<stack>.*) (?P<count>\d+)$")
_FRAME_LINE = re.compile(r":\d+\)$")


def _frame(raw: str) -> str:
    # "name (path/to/file.py:123)" -> "name (path/to/file.py)": one row per function.
    return _FRAME_LINE.sub(")", raw.strip())


def _samples(collapsed: str) -> Iterator[tuple[list[str], int]]:
    """Each line of py-spy's raw output as (its frames, outermost first; its sample count)."""
    for line in collapsed.splitlines():
        m = _LINE.match(line)
        if m:
            yield m["stack"].split(";"), int(m["count"])


def top(collapsed: str, n: int = 25) -> tuple[int, list[tuple[str, float, float]]]:
    """(samples, [(function, inclusive %, self %)]) sorted by inclusive share."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for raw, count in _samples(collapsed):
        frames = [_frame(f) for f in raw if f.strip()]
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


def split_threads(collapsed: str) -> tuple[str, str]:
    """(the event loop's samples, the other threads' samples). Recorded with --threads, each
    stack starts with "thread (TID): NAME"; the event loop runs in MainThread."""
    loop: list[str] = []
    others: list[str] = []
    for line in collapsed.splitlines():
        first = line.split(";", 1)[0]
        (loop if "MainThread" in first or "run_forever" in line else others).append(line)
    return "\n".join(loop), "\n".join(others)


# What each sample was doing, by the innermost frame that names one of these (first match in
# this order); docs/performance.md reports the shares.
PARTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("envelope open (the ceiling's work)", ("gateway/intake/envelope.py",)),
    ("signed receipt", ("gateway/intake/receipts.py",)),
    ("encryption at rest", ("gateway/keys/datacipher.py",)),
    (
        "adapter and schema validation",
        ("gateway/intake/validation.py", "gateway/intake/fastschema.py", "adapters/"),
    ),
    ("logging and metrics", ("structlog", "logging/", "prometheus", "gateway/logging.py")),
    ("client certificate", ("gateway/http/tls.py", "gateway/keys/pki.py")),
    (
        "database and group commit",
        (
            "sqlalchemy",
            "aiosqlite",
            "asyncpg",
            "sqlite3",
            "gateway/storage/",
            "repository.py",
            "batcher.py",
            "gateway/audit/",
        ),
    ),
    ("TLS records and socket I/O", ("ssl.py", "sslproto.py", "selector_events.py", "selectors.py")),
    (
        "HTTP (aiohttp, middleware, handler)",
        ("aiohttp/", "multidict", "yarl", "gateway/http/", "gateway/intake/http.py"),
    ),
)


def parts(collapsed: str) -> tuple[int, list[tuple[str, float]]]:
    """(samples, [(part, %)]) with the rest as "event loop and the rest"."""
    counts: Counter[str] = Counter()
    total = 0
    for raw, count in _samples(collapsed):
        total += count
        found = "event loop and the rest"
        for frame in reversed(raw):
            name = next((p for p, marks in PARTS if any(mark in frame for mark in marks)), None)
            if name is not None:
                found = name
                break
        counts[found] += count
    return total, [(name, 100 * c / total) for name, c in counts.most_common()] if total else []


def _table(collapsed: str, n: int) -> list[str]:
    # The trunk every sample shares (runpy, asyncio.run, the thread's bootstrap) says nothing.
    _, rows = top(collapsed, n + 15)
    rows = [row for row in rows if row[1] < 99.5][:n]
    lines = ["| function | on stack | self |", "|---|---:|---:|"]
    lines += [f"| `{name}` | {inc:.1f}% | {own:.1f}% |" for name, inc, own in rows]
    return lines


def markdown(collapsed: str, n: int = 25) -> str:
    loop, others = split_threads(collapsed)
    loop_total, _ = top(loop, 1)
    other_total, _ = top(others, 1)
    everything_total, shares = parts(collapsed)
    return "\n".join(
        [
            f"Every thread, by part: {everything_total} samples holding the GIL (the event loop "
            f"{loop_total}, the others {other_total}), each counted under the innermost part "
            "of the gateway it was in:",
            "",
            "| part | share |",
            "|---|---:|",
            *[f"| {name} | {share:.1f}% |" for name, share in shares],
            "",
            f"Event-loop thread: {loop_total} samples (share of them with the function on the "
            "stack, and at its top):",
            "",
            *_table(loop, n),
            "",
            f"Other threads (SQLite units, driver threads): {other_total} samples:",
            "",
            *_table(others, n // 2),
        ]
    )


def py_spy() -> str | None:
    # Installed into the virtualenv beside this Python, which need not be on PATH.
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


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
            "--threads",
            # Only samples that hold the GIL: a thread waiting for it (the event loop behind
            # the SQLite writer, say) is not where the CPU goes.
            "--gil",
            "--format",
            "raw",
            "--output",
            str(out),
            "--nonblocking",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
