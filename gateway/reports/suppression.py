"""Small-number suppression of the report's figures for publication (docs/reports.md,
"Suppression"). Pure: figures in, a copy with the hidden cells replaced out.

Every count from 1 to N-1 is shown as "<N" (primary suppression). A total next to its parts would
give a hidden part away by subtraction, so wherever a sum has exactly one hidden cell another one
is hidden too (secondary suppression): the total first, as the issue asks, and where the total is
already hidden, the smallest part. Those are shown as "[c]", not "<N": they may be large, and
"<N" would then be false. This repeats until every sum has no hidden cell or at least two.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

from gateway.intake.validation import AGE_BANDS
from gateway.reports.figures import GENDERS

Pointer = tuple[str, ...]
SECONDARY = "[c]"


def primary_mark(below: int) -> str:
    return f"<{below}"


def pointer_text(pointer: Pointer) -> str:
    """As an RFC 6901 JSON pointer."""
    return "".join("/" + part.replace("~", "~0").replace("/", "~1") for part in pointer)


def counts(figures: dict[str, Any], prefix: Pointer = ()) -> Iterator[tuple[Pointer, int]]:
    """Every count in the figures: the integers (an average is a float, a year a string)."""
    for key, value in figures.items():
        if isinstance(value, dict):
            yield from counts(value, (*prefix, key))
        elif isinstance(value, int) and not isinstance(value, bool):
            yield (*prefix, key), value


def relations(figures: dict[str, Any]) -> list[tuple[Pointer, list[Pointer]]]:
    """(total, parts) for every sum the report shows, so that total = sum(parts)."""
    sums: list[tuple[Pointer, list[Pointer]]] = []
    for section in ("notifications_received", "completed_in_year"):
        s: Pointer = (section,)
        sums.append(((*s, "children"), [(*s, "by_gender", g) for g in GENDERS]))
        sums.append(((*s, "children"), [(*s, "by_age_band", b, "total") for b in AGE_BANDS]))
        for band in AGE_BANDS:
            sums.append(
                (
                    (*s, "by_age_band", band, "total"),
                    [(*s, "by_age_band", band, g) for g in GENDERS],
                )
            )
        for gender in GENDERS:
            sums.append(
                ((*s, "by_gender", gender), [(*s, "by_age_band", b, gender) for b in AGE_BANDS])
            )
    since: Pointer = ("since_inception",)
    sums.append(((*since, "commissioned"), [(*since, "completed"), (*since, "under_way")]))
    years = list(figures["since_inception"]["completed_by_year"])
    sums.append(((*since, "completed"), [(*since, "completed_by_year", y) for y in years]))
    # The same number twice: the year's reviews are also the year's bar of the chart.
    if figures["year"] in years:
        sums.append(
            (("completed_in_year", "reviews"), [(*since, "completed_by_year", figures["year"])])
        )
    return sums


def hidden_cells(figures: dict[str, Any], below: int) -> dict[Pointer, str]:
    """The cells to hide and what to show in their place."""
    values = dict(counts(figures))
    hidden = {p: primary_mark(below) for p, v in values.items() if 1 <= v < below}
    sums = relations(figures)
    changed = bool(hidden)
    while changed:
        changed = False
        for total, parts in sums:
            if sum(1 for cell in (total, *parts) if cell in hidden) != 1:
                continue
            if total not in hidden:
                hidden[total] = SECONDARY
            else:
                candidates = sorted((values[p], p) for p in parts if p not in hidden and values[p])
                if not candidates:
                    continue
                hidden[candidates[0][1]] = SECONDARY
            changed = True
    return hidden


def suppress(figures: dict[str, Any], below: int) -> dict[str, Any]:
    """A copy for publication: hidden cells hold their mark, and `suppression` lists them."""
    if below < 2:
        raise ValueError("the suppression threshold must be 2 or more")
    hidden = hidden_cells(figures, below)
    published = copy.deepcopy(figures)
    for pointer, mark in hidden.items():
        node = published
        for key in pointer[:-1]:
            node = node[key]
        node[pointer[-1]] = mark
    published["suppression"] = {
        "below": below,
        "cells": {pointer_text(p): hidden[p] for p in sorted(hidden)},
    }
    return published
