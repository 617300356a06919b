"""`cmr-notification/1`: the body already is the canonical document."""

from __future__ import annotations

from typing import Any


class CanonicalJson:
    name = "cmr-notification/1"

    def to_canonical(self, body: Any) -> Any:
        return body
