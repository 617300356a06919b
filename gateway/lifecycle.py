"""The lifecycle of a notification (DESIGN.md, "Lifecycle of a notification"), as data: which
state may follow which. Pure. Every feature that moves `notifications.status` asks `check`
first, so that no path can skip a step (a case cannot be commissioned without a panel
recommendation, nor recommended without being on an agenda)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from gateway.errors import UsageError

RECEIVED = "received"
SCREENING = "screening"
INFORMATION_GATHERING = "information_gathering"
READY_FOR_PANEL = "ready_for_panel"
ON_AGENDA = "on_agenda"
CONSIDERED = "considered"
DEFERRED = "deferred"
RECOMMENDED = "recommended"
NOT_RECOMMENDED = "not_recommended"
WITHDRAWN = "withdrawn"
COMMISSIONED = "commissioned"
NOT_COMMISSIONED = "not_commissioned"
CMR_UNDER_WAY = "cmr_under_way"
CMR_COMPLETED = "cmr_completed"

TRANSITIONS: Mapping[str, frozenset[str]] = {
    RECEIVED: frozenset({SCREENING, INFORMATION_GATHERING, READY_FOR_PANEL, WITHDRAWN}),
    # Screening may hand a notification back to the notifying agency for more detail.
    SCREENING: frozenset({RECEIVED, INFORMATION_GATHERING, READY_FOR_PANEL, WITHDRAWN}),
    INFORMATION_GATHERING: frozenset({READY_FOR_PANEL, WITHDRAWN}),
    # Back to gathering when the secretariat asks another agency before the agenda closes.
    READY_FOR_PANEL: frozenset({ON_AGENDA, INFORMATION_GATHERING, WITHDRAWN}),
    ON_AGENDA: frozenset({CONSIDERED, WITHDRAWN}),
    # "request more information" sends the case back to gathering.
    CONSIDERED: frozenset(
        {DEFERRED, RECOMMENDED, NOT_RECOMMENDED, WITHDRAWN, INFORMATION_GATHERING}
    ),
    DEFERRED: frozenset({ON_AGENDA, INFORMATION_GATHERING, WITHDRAWN}),
    # The Board decides on the panel's recommendation either way: it may commission a review
    # the panel did not recommend, and its "not commissioned" closes a case in the statistics.
    RECOMMENDED: frozenset({COMMISSIONED, NOT_COMMISSIONED}),
    NOT_RECOMMENDED: frozenset({COMMISSIONED, NOT_COMMISSIONED}),
    WITHDRAWN: frozenset(),
    COMMISSIONED: frozenset({CMR_UNDER_WAY}),
    NOT_COMMISSIONED: frozenset(),
    CMR_UNDER_WAY: frozenset({CMR_COMPLETED}),
    CMR_COMPLETED: frozenset(),
}

STATES = frozenset(TRANSITIONS)
# Where a case may be withdrawn from (the notifying agency withdraws it, or the panel does).
WITHDRAWABLE = frozenset(s for s, nxt in TRANSITIONS.items() if WITHDRAWN in nxt)


class TransitionNotAllowed(UsageError):
    code = "transition_not_allowed"
    status = 409
    title = "This change of state is not allowed"

    def __init__(self, reference: str | None, current: str, wanted: str) -> None:
        what = f"notification {reference}" if reference else "the notification"
        allowed = ", ".join(sorted(TRANSITIONS.get(current, ()))) or "none (it is final)"
        super().__init__(
            f"{what} is {current}: it cannot become {wanted} (allowed next: {allowed})",
            current=current,
            wanted=wanted,
        )
        self.current = current
        self.wanted = wanted


def allowed(current: str, wanted: str) -> bool:
    return wanted in TRANSITIONS.get(current, frozenset())


def check(current: str, wanted: str, reference: str | None = None) -> None:
    """Raise TransitionNotAllowed, naming both states, unless `wanted` may follow `current`."""
    if not allowed(current, wanted):
        raise TransitionNotAllowed(reference, current, wanted)


@dataclass(frozen=True)
class Transition:
    """One checked change of a notification's state, and why (for its audit event)."""

    notification_id: int
    reference: str
    current: str
    wanted: str
    why: str

    def __post_init__(self) -> None:
        check(self.current, self.wanted, self.reference)
