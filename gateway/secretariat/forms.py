"""The meeting record form, read into a record document (schemas/meeting-record-1.schema.json),
the same document `cmr-gateway meeting record FILE` takes. Pure: no rule of Schedule 5 is
checked here (the meetings service checks them all); this only says which box was ticked."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

RECORD_FORMAT = "cmr-meeting-record/1"
VOTES = ("for", "against", "abstain")


# Each field name with every value sent for it (checkboxes send several).
Form = Mapping[str, Sequence[str]]


def _text(form: Form, key: str) -> str:
    values = form.get(key) or [""]
    return values[-1].strip()


def _all(form: Form, key: str, allowed: Sequence[str]) -> list[str]:
    return [v for v in dict.fromkeys(form.get(key, [])) if v in allowed]


def record_document(
    meeting: str, members: Sequence[str], references: Sequence[str], form: Form
) -> dict[str, Any]:
    """Field names: present, apologies (member ids); for each item reference R:
    interest-R (member ids) and interest-nature-R, outcome-R, vote-R-MEMBER (for, against,
    abstain), casting-R (for, against) and rationale-R; reconvene_at (local date and time)."""
    document: dict[str, Any] = {
        "format": RECORD_FORMAT,
        "meeting": meeting,
        "present": _all(form, "present", members),
    }
    apologies = _all(form, "apologies", members)
    if apologies:
        document["apologies"] = apologies
    interests = []
    items = []
    for ref in references:
        nature = _text(form, f"interest-nature-{ref}")
        for member in _all(form, f"interest-{ref}", members):
            interest: dict[str, Any] = {"member": member, "reference": ref}
            if nature:
                interest["nature"] = nature
            interests.append(interest)
        outcome = _text(form, f"outcome-{ref}")
        if not outcome:
            continue
        item: dict[str, Any] = {
            "reference": ref,
            "outcome": outcome,
            "rationale": _text(form, f"rationale-{ref}"),
        }
        if outcome != "withdrawn":
            votes: dict[str, list[str]] = {v: [] for v in VOTES}
            for member in members:
                choice = _text(form, f"vote-{ref}-{member}")
                if choice in votes:
                    votes[choice].append(member)
            item["votes"] = votes
        casting = _text(form, f"casting-{ref}")
        if casting in ("for", "against"):
            item["casting_vote"] = casting
        items.append(item)
    if interests:
        document["interests"] = interests
    if items:
        document["items"] = items
    reconvene = _text(form, "reconvene_at")
    if reconvene:
        # A datetime-local field sends no seconds; the record format takes either.
        document["reconvene_at"] = reconvene
    return document


def lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]
