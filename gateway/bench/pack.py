"""The agenda pack figure: the pack of one meeting (HTML and PDF) with 100, 1,000 and 10,000
items, rendered by the meetings feature's own code (gateway/meetings/pack.py) from an agenda
compiled by its own compiler (gateway/meetings/agenda.py) out of realistic cases: a mix of
decision items (with the Regulation 17 checklist from the example notification and answers
from four agencies), deferred items, items for noting and reviews in progress.

Each size renders in a process of its own, with a time limit, so that a slow size cannot take
the bench past its budget and its memory is its own. When the meetings feature is not there,
or its functions are not the ones this calls, the figure is reported as not available with
the reason, and nothing is measured. The pack is not built here.

    python -m gateway.bench.pack --items 1000     (prints one JSON object)"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from gateway.bench import report
from gateway.bench.harness import peak_rss_mib

LONDON = ZoneInfo("Europe/London")
AGENCIES = [("PSNI", "Police Service of Northern Ireland"), ("EA", "Education Authority")]
ANSWERING = [
    ("BHSCT", "Belfast Health and Social Care Trust"),
    ("NHSCT", "Northern Health and Social Care Trust"),
    ("EA", "Education Authority"),
    ("PSNI", "Police Service of Northern Ireland"),
]


def problem() -> str | None:
    """Why the figure cannot be measured, or None."""
    try:
        from gateway.meetings import agenda, model, pack
    except ImportError as exc:
        return f"the meetings feature cannot be imported ({exc})"
    for module, names in (
        (pack, ("document", "render")),
        (agenda, ("Case", "Child", "AgencyAnswer", "Placement", "compile_sections")),
        (model, ("Meeting", "AgendaVersion")),
    ):
        missing = [n for n in names if not hasattr(module, n)]
        if missing:
            return f"{module.__name__} has no {', '.join(missing)}"
    return None


def _cases(n: int, meeting_id: str, today: date) -> list[Any]:
    from gateway import lifecycle as lc
    from gateway.bench.loadgen import EXAMPLE
    from gateway.meetings.agenda import AgencyAnswer, Case, Child

    document = json.loads(EXAMPLE.read_text(encoding="utf-8"))
    summary = (
        "Known to children's services since 2019; two referrals, the last closed in March "
        "after a home visit. No current plan. "
    ) * 3
    cases = []
    for i in range(n):
        kind = i % 10
        code, name = AGENCIES[i % len(AGENCIES)]
        received = today - timedelta(days=30 + i % 300)
        if kind < 4:
            status = lc.READY_FOR_PANEL
        elif kind < 5:
            status = lc.DEFERRED
        elif kind < 8:
            status = lc.INFORMATION_GATHERING
        else:
            status = lc.CMR_UNDER_WAY
        answers = tuple(
            AgencyAnswer(
                agency=a,
                agency_name=an,
                status="answered" if (i + j) % 3 else "sent",
                deadline_on=received + timedelta(days=14),
                answered_on=received + timedelta(days=9) if (i + j) % 3 else None,
                known_to_agency=bool((i + j) % 2) if (i + j) % 3 else None,
                summary=summary if (i + j) % 3 else None,
                concerns="Escalation was slow." if (i + j) % 5 == 0 else None,
            )
            for j, (a, an) in enumerate(ANSWERING)
        )
        cases.append(
            Case(
                reference=f"CMRN-{received.year}-{i + 1:05d}",
                agency=code,
                agency_name=name,
                received_on=received,
                route="harm" if i % 7 else "good_practice",
                incident_type="death" if i % 3 == 0 else "serious_harm",
                status=status,
                children=(Child("1-5 years", "female"), Child("6-11 years", "male")),
                document=document if status in (lc.READY_FOR_PANEL, lc.DEFERRED) else None,
                answers=answers,
                board_decided_on=received + timedelta(days=20) if kind >= 8 else None,
                commissioned_on=received + timedelta(days=25) if kind >= 8 else None,
                cmr_started_on=received + timedelta(days=40) if kind >= 8 else None,
            )
        )
    return cases


def render(items: int) -> dict[str, Any]:
    from gateway.meetings import agenda, model, pack

    now = datetime.now(UTC)
    meeting_id = "M-BENCH-1"
    meeting = model.Meeting(
        id=1,
        public_id=meeting_id,
        kind="scheduled",
        source="bench",
        status="compiled",
        starts_at=now + timedelta(days=7),
        duration_minutes=120,
        place="Board room",
        online_link=None,
        cut_off_on=(now + timedelta(days=1)).date(),
        notice_by_on=(now + timedelta(days=2)).date(),
        notice_sent_at=None,
        ics_uid="bench@cmr",
        ics_sequence=0,
        reconvenes=None,
        requisitioned_on=None,
        requisitioned_by=(),
        created_at=now,
        updated_at=now,
    )
    started = time.perf_counter()
    compiled = agenda.compile_sections(
        meeting_id, _cases(items, meeting_id, now.date()), ["Date of the next meeting"]
    )
    version = model.AgendaVersion(
        meeting=meeting_id,
        version=1,
        status="compiled",
        compiled_at=now,
        compiled_by="bench",
        issued_at=None,
        content={"sections": compiled.sections, "removed": [], "compared_with_version": None},
    )
    doc = pack.document(meeting, version, LONDON)
    compile_seconds = time.perf_counter() - started
    counted = sum(len(s["items"]) for s in doc["sections"])
    # As in a serving gateway: reportlab imported and the fonts registered before the clock.
    warm = dict(doc, sections=[dict(s, items=s["items"][:1]) for s in doc["sections"]])
    pack.render(warm, "pdf")
    t0 = time.perf_counter()
    html = pack.render(doc, "html")
    t1 = time.perf_counter()
    pdf = pack.render(doc, "pdf")
    t2 = time.perf_counter()
    return {
        "items": counted,
        "compile_seconds": round(compile_seconds, 3),
        "html_seconds": round(t1 - t0, 3),
        "pdf_seconds": round(t2 - t1, 3),
        "html_bytes": len(html),
        "pdf_bytes": len(pdf),
    }


def measure(
    sizes: list[int], work: Path, timeout: float = 90.0, budget: float = 600.0
) -> dict[str, Any]:
    """`timeout` per size; `budget` for all of them (what the bench has left)."""
    why = problem()
    if why is not None:
        return report.unavailable_pack(why, sizes)
    result: dict[str, Any] = {"available": True}
    deadline = time.monotonic() + budget
    for size in sizes:
        limit = min(timeout, deadline - time.monotonic())
        if limit < 5:
            result[str(size)] = {
                "html_seconds": None,
                "pdf_seconds": None,
                "problem": "not run: the bench's time budget was spent",
            }
            continue
        cmd = [sys.executable, "-m", "gateway.bench.pack", "--items", str(size)]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=work)
        try:
            out, err = proc.communicate(timeout=limit)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            result[str(size)] = {
                "html_seconds": None,
                "pdf_seconds": None,
                "problem": f"did not finish within {limit:.0f} s",
            }
            continue
        if proc.returncode != 0:
            result[str(size)] = {
                "html_seconds": None,
                "pdf_seconds": None,
                "problem": " ".join(err.decode(errors="replace").strip().splitlines()[-1:]),
            }
            continue
        result[str(size)] = json.loads(out.decode().strip().splitlines()[-1])
    return result


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m gateway.bench.pack")
    p.add_argument("--items", type=int, required=True)
    args = p.parse_args(argv)
    result = render(args.items)
    import os

    result["peak_rss_mib"] = peak_rss_mib(os.getpid())
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
