"""Compiling an agenda from plain records, and marking what changed since the last issued
version (docs/meetings.md, "The agenda"). Pure: the service gathers the records (decrypted where
they must be) and stores what comes out.

Which section a case belongs to follows from its state and its placements (the rows that put a
case for decision on one meeting): a case is for decision on one meeting at a time, so an item
placed on another meeting that has not been held is never on this one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from gateway import lifecycle as lc
from gateway.meetings.rules import DEFER

NEW, DEFERRED, NOTING, CMR_PROGRESS, AOB = "new", "deferred", "noting", "cmr_progress", "aob"
SECTIONS = {
    NEW: "New cases ready for the panel",
    DEFERRED: "Items deferred at an earlier meeting",
    NOTING: "Cases still gathering information, for noting",
    CMR_PROGRESS: "Progress of commissioned Case Management Reviews",
    AOB: "Any other business",
}
DECISION_SECTIONS = (NEW, DEFERRED)
NOTING_STATES = frozenset({lc.RECEIVED, lc.SCREENING, lc.INFORMATION_GATHERING})
CMR_STATES = frozenset({lc.COMMISSIONED, lc.CMR_UNDER_WAY})
SETTLED = frozenset({"answered", "declined", "expired", "revoked"})
MAX_SUMMARY = 2000
# Keys of an item that describe its place in a version rather than the business itself.
MARKS = ("number", "change", "changed_fields")


@dataclass(frozen=True)
class Placement:
    """A case put for decision on a meeting, and what that meeting decided on it."""

    meeting: str
    meeting_open: bool
    section: str
    outcome: str | None = None
    reason: str | None = None


@dataclass(frozen=True)
class Child:
    age_band: str
    gender: str


@dataclass(frozen=True)
class AgencyAnswer:
    agency: str
    agency_name: str
    status: str
    deadline_on: date
    answered_on: date | None = None
    known_to_agency: bool | None = None
    summary: str | None = None
    concerns: str | None = None
    reason: str | None = None


@dataclass(frozen=True)
class Case:
    reference: str
    agency: str
    agency_name: str
    received_on: date
    route: str
    incident_type: str
    status: str
    children: tuple[Child, ...] = ()
    placements: tuple[Placement, ...] = ()
    # The decrypted notification: only read for the Reg 17 checklist of decision items.
    document: Mapping[str, Any] | None = None
    answers: tuple[AgencyAnswer, ...] = ()
    board_decided_on: date | None = None
    commissioned_on: date | None = None
    cmr_started_on: date | None = None


@dataclass(frozen=True)
class Place:
    section: str
    carried_from: str | None = None


def place(case: Case, meeting: str) -> Place | None:
    """The section of `meeting`'s agenda the case goes in, or None when it is not this
    meeting's business."""
    undecided = [p for p in case.placements if p.outcome is None]
    elsewhere = [p for p in undecided if p.meeting != meeting and p.meeting_open]
    if case.status in (lc.READY_FOR_PANEL, lc.DEFERRED):
        if elsewhere:
            return None
        return Place(NEW if case.status == lc.READY_FOR_PANEL else DEFERRED)
    if case.status == lc.ON_AGENDA:
        here = [p for p in undecided if p.meeting == meeting]
        if here:
            return Place(here[0].section)
        # Placed on a meeting that was held without deciding it (it was inquorate): carried.
        closed = [p for p in undecided if not p.meeting_open]
        if closed and not elsewhere:
            return Place(closed[-1].section, carried_from=closed[-1].meeting)
        return None
    if case.status in NOTING_STATES:
        return Place(NOTING)
    if case.status in CMR_STATES:
        return Place(CMR_PROGRESS)
    return None


def deferrals(case: Case) -> list[dict[str, str]]:
    return [
        {"meeting": p.meeting, "reason": p.reason or ""}
        for p in case.placements
        if p.outcome == DEFER
    ]


# -- the Reg 17 checklist ----------------------------------------------------------------------

_STATUS = {
    "current": "current",
    "previous": "previous",
    "never": "never",
    "unknown": "not known",
    "no_siblings": "no siblings",
}


def _yes(value: Any) -> str:
    return "Yes" if value is True else "No" if value is False else "Not stated"


def _both(facts: Mapping[str, Any]) -> str:
    child = _STATUS.get(str(facts.get("child")), "not stated")
    siblings = _STATUS.get(str(facts.get("siblings")), "not stated")
    return f"child: {child}; siblings: {siblings}"


def _either(facts: Mapping[str, Any]) -> bool:
    return facts.get("child") in ("current", "previous") or facts.get("siblings") in (
        "current",
        "previous",
    )


def checklist(route: str, document: Mapping[str, Any]) -> dict[str, Any]:
    """The Regulation 17 criteria as the notification states them. Limb 17(2)(c), the Board's
    concern about how member bodies safeguarded the child, is always the panel's to judge."""
    if route == "good_practice":
        gp = document.get("good_practice") or {}
        return {
            "regulation": "17(3)",
            "rows": [
                {
                    "limb": "17(3)",
                    "question": "Member bodies worked effectively together to safeguard the child",
                    "answer": str(gp.get("effective_working", "Not stated")),
                },
                {
                    "limb": "17(3)",
                    "question": "There is outstanding positive learning",
                    "answer": str(gp.get("positive_learning", "Not stated")),
                },
            ],
            "met": {},
        }
    reg = document.get("reg17") or {}
    abuse = str(reg.get("abuse_or_neglect", "not stated")).replace("_", " ")
    categories = reg.get("abuse_categories") or []
    if categories:
        abuse += f" ({', '.join(str(c) for c in categories)})"
    register = reg.get("child_protection_register") or {}
    looked_after = reg.get("looked_after") or {}
    limb_a = reg.get("child_died") is True or reg.get("significant_harm") is True
    limb_b = (
        reg.get("abuse_or_neglect") in ("known", "suspected")
        or _either(register)
        or _either(looked_after)
    )
    return {
        "regulation": "17(2)",
        "rows": [
            {
                "limb": "17(2)(a)",
                "question": "The child has died",
                "answer": _yes(reg.get("child_died")),
            },
            {
                "limb": "17(2)(a)",
                "question": "The child has been significantly harmed",
                "answer": _yes(reg.get("significant_harm")),
            },
            {
                "limb": "17(2)(b)",
                "question": "Abuse or neglect of the child is known or suspected",
                "answer": abuse.capitalize(),
            },
            {
                "limb": "17(2)(b)",
                "question": "The child or a sibling is or was on a child protection register",
                "answer": _both(register).capitalize(),
            },
            {
                "limb": "17(2)(b)",
                "question": "The child or a sibling is or was looked after",
                "answer": _both(looked_after).capitalize(),
            },
            {
                "limb": "17(2)(c)",
                "question": "The Board has concerns about how well member bodies safeguarded "
                "the child",
                "answer": "For the panel's judgement",
            },
        ],
        "met": {"17(2)(a)": limb_a, "17(2)(b)": limb_b},
    }


def learning_flags(document: Mapping[str, Any]) -> list[str]:
    """What past reviews found missing when cases crossed trusts or borders (DESIGN.md, Data)."""
    flags: list[str] = []
    family = document.get("family") or {}
    if family.get("interpreter_needed"):
        language = family.get("language")
        flags.append(f"Interpreter needed ({language})" if language else "Interpreter needed")
    if family.get("moved_between_trusts"):
        flags.append("The family moved between HSCT areas")
    elsewhere = family.get("other_jurisdictions") or []
    if elsewhere:
        flags.append(f"Bodies in other jurisdictions involved: {', '.join(map(str, elsewhere))}")
    if (document.get("reg17") or {}).get("protection_history_before_birth"):
        flags.append("Child protection involvement began before birth")
    return flags


# -- items -----------------------------------------------------------------------------------


def _clip(text: str | None) -> str | None:
    if text is None:
        return None
    text = text.strip()
    return text if len(text) <= MAX_SUMMARY else text[: MAX_SUMMARY - 1].rstrip() + "…"


def _answer(a: AgencyAnswer) -> dict[str, Any]:
    return {
        "agency": a.agency,
        "agency_name": a.agency_name,
        "status": a.status,
        "deadline_on": a.deadline_on.isoformat(),
        "answered_on": a.answered_on.isoformat() if a.answered_on else None,
        "known_to_agency": a.known_to_agency,
        "summary": _clip(a.summary),
        "concerns": _clip(a.concerns),
        "reason": _clip(a.reason),
    }


def _base(case: Case) -> dict[str, Any]:
    return {
        "reference": case.reference,
        "notifying_agency": {"code": case.agency, "name": case.agency_name},
        "received_on": case.received_on.isoformat(),
        "route": case.route,
        "incident_type": case.incident_type,
        "children": [{"age_band": c.age_band, "gender": c.gender} for c in case.children],
    }


def _regulation(route: str) -> str:
    return "Regulation 17(3), good practice" if route == "good_practice" else "Regulation 17(2)"


def decision_item(case: Case, where: Place) -> dict[str, Any]:
    history = deferrals(case)
    sought = (
        "Whether to recommend to the SBNI Board that a Case Management Review be commissioned "
        f"({_regulation(case.route)})."
    )
    if history:
        times = "once" if len(history) == 1 else f"{len(history)} times"
        sought += f" Deferred {times} before."
    document = case.document or {}
    return {
        **_base(case),
        "checklist": checklist(case.route, document),
        "learning_flags": learning_flags(document),
        "answers": [_answer(a) for a in case.answers],
        "deferrals": {"count": len(history), "history": history},
        "carried_from": where.carried_from,
        "decision_sought": sought,
    }


def noting_item(case: Case) -> dict[str, Any]:
    answered = sorted({a.agency for a in case.answers if a.status in SETTLED})
    waiting = sorted({a.agency for a in case.answers if a.status not in SETTLED})
    if waiting:
        sought = f"For noting: information is awaited from {', '.join(waiting)}."
    elif answered:
        sought = "For noting: every agency asked has answered; not yet marked ready for panel."
    else:
        sought = "For noting: no agency has been asked for information yet."
    return {
        **_base(case),
        "status": case.status,
        "answered": answered,
        "not_answered": waiting,
        "decision_sought": sought,
    }


def cmr_item(case: Case) -> dict[str, Any]:
    def iso(d: date | None) -> str | None:
        return d.isoformat() if d else None

    return {
        "reference": case.reference,
        "notifying_agency": {"code": case.agency, "name": case.agency_name},
        "status": case.status,
        "board_decided_on": iso(case.board_decided_on),
        "commissioned_on": iso(case.commissioned_on),
        "started_on": iso(case.cmr_started_on),
        "decision_sought": "For noting: progress of the review.",
    }


@dataclass(frozen=True)
class Compiled:
    sections: list[dict[str, Any]]
    # Decision items of this meeting: reference -> (section, carried from)
    placements: dict[str, Place]


def compile_sections(meeting: str, cases: Iterable[Case], aob: Sequence[str]) -> Compiled:
    """The agenda's sections, items in a stable order (date received, then reference)."""
    items: dict[str, list[dict[str, Any]]] = {s: [] for s in SECTIONS}
    placements: dict[str, Place] = {}
    for case in sorted(cases, key=lambda c: (c.received_on, c.reference)):
        where = place(case, meeting)
        if where is None:
            continue
        if where.section in DECISION_SECTIONS:
            items[where.section].append(decision_item(case, where))
            placements[case.reference] = where
        elif where.section == NOTING:
            items[NOTING].append(noting_item(case))
        else:
            items[CMR_PROGRESS].append(cmr_item(case))
    items[AOB] = [{"title": text} for text in aob]
    sections = []
    for n, (section, title) in enumerate(SECTIONS.items(), start=1):
        numbered = [{"number": f"{n}.{i}", **item} for i, item in enumerate(items[section], 1)]
        sections.append({"id": section, "number": str(n), "title": title, "items": numbered})
    return Compiled(sections, placements)


# -- versions ----------------------------------------------------------------------------------


def _key(section: str, item: Mapping[str, Any]) -> str:
    return f"aob:{item['title']}" if section == AOB else f"case:{item['reference']}"


def _essence(item: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in item.items() if k not in MARKS}


def _index(sections: Sequence[Mapping[str, Any]]) -> dict[str, tuple[str, dict[str, Any]]]:
    return {_key(s["id"], item): (s["id"], _essence(item)) for s in sections for item in s["items"]}


def same_business(a: Sequence[Mapping[str, Any]], b: Sequence[Mapping[str, Any]]) -> bool:
    """Whether two versions hold the same business, whatever their marks."""
    return [(s["id"], [_essence(i) for i in s["items"]]) for s in a] == [
        (s["id"], [_essence(i) for i in s["items"]]) for s in b
    ]


def mark_changes(
    sections: Sequence[Mapping[str, Any]], issued: Sequence[Mapping[str, Any]] | None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Mark each item added or changed since the issued version, and list what was removed.
    Without an issued version nothing is marked: the first issue is all new to its readers."""
    before = _index(issued) if issued is not None else None
    marked: list[dict[str, Any]] = []
    seen: set[str] = set()
    for s in sections:
        items = []
        for item in s["items"]:
            key = _key(s["id"], item)
            seen.add(key)
            change: str | None = None
            fields: list[str] = []
            if before is not None:
                if key not in before:
                    change = "added"
                else:
                    old_section, old = before[key]
                    now = _essence(item)
                    fields = sorted(k for k in now.keys() | old.keys() if now.get(k) != old.get(k))
                    if old_section != s["id"]:
                        fields = ["section", *fields]
                    change = "changed" if fields else None
            items.append({**item, "change": change, "changed_fields": fields})
        marked.append({**s, "items": items})
    removed = []
    if before is not None:
        for key, (section, item) in before.items():
            if key not in seen:
                label = item.get("reference") or item.get("title")
                removed.append({"section": section, "item": str(label)})
    return marked, removed
