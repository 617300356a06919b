"""`python -m gateway.healthcheck`: exit 0 when the local gateway answers /healthz on its web
listener, else 1. For a container's HEALTHCHECK, which has no curl. The certificate is not
verified: the probe goes to this host's own loopback and carries nothing secret, and the
certificate names the public host, not 127.0.0.1."""

from __future__ import annotations

import json
import ssl
import sys
import urllib.request

from gateway.settings import load_settings


def main() -> int:
    try:
        settings = load_settings()
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        url = f"https://127.0.0.1:{settings.web_port}/healthz"
        with urllib.request.urlopen(url, context=ctx, timeout=4) as resp:
            return 0 if resp.status == 200 and json.load(resp).get("status") == "ok" else 1
    except Exception as exc:
        print(f"unhealthy: {type(exc).__name__}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
