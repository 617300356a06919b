"""Schemathesis hooks (loaded through SCHEMATHESIS_HOOKS by tests/test_ops_openapi.py):
the agency API takes `application/jose`, a compact JWE as text, which schemathesis has no
serializer for."""

from __future__ import annotations

from typing import Any

import schemathesis


@schemathesis.serializer("application/jose")
def jose(_ctx: Any, value: Any) -> dict[str, Any]:
    data = value if isinstance(value, bytes) else str(value).encode("utf-8", "surrogatepass")
    return {"data": data}
