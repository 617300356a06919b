"""The HTTP floor: what the server stack alone costs, with no gateway behind it. The same aiohttp
and asyncio TLS, the installation's own certificates and mutual-TLS context, the same route
and the same load generator, but a handler that only reads the body and answers 202 with a
small JSON body. Its rate on one core bounds what any handler on this stack can reach: a
request costs at least the floor's work plus opening its envelope, so
ingest / ceiling <= floor / (floor + ceiling) (docs/performance.md).

    python -m gateway.bench.floor --data-dir DIR --api-port P --web-port Q

It is a bench tool only: it answers no real request and stores nothing."""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import Sequence
from pathlib import Path

from aiohttp import web

from gateway.http.tls import api_context, web_context
from gateway.settings import load_settings

RECEIPT = {"reference": "CMRN-0000-0000", "receipt": "floor"}


async def _submit(request: web.Request) -> web.Response:
    await request.read()
    return web.json_response(RECEIPT, status=202)


async def _ready(_request: web.Request) -> web.Response:
    return web.json_response({"status": "ready"})


async def serve(data_dir: Path, api_port: int, web_port: int) -> None:
    settings = load_settings(data_dir)
    api = web.Application()
    api.router.add_post("/v1/notifications", _submit)
    web_app = web.Application()
    web_app.router.add_get("/readyz", _ready)
    runners = [web.AppRunner(api, access_log=None), web.AppRunner(web_app, access_log=None)]
    for runner in runners:
        await runner.setup()
    api_ctx = api_context(
        settings.server_cert, settings.server_key, settings.client_ca, proxy_mode=False
    )
    await web.TCPSite(runners[0], "127.0.0.1", api_port, ssl_context=api_ctx).start()
    web_ctx = web_context(settings.web_cert, settings.web_key)
    await web.TCPSite(runners[1], "127.0.0.1", web_port, ssl_context=web_ctx).start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    try:
        await stop.wait()
    finally:
        for runner in runners:
            await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m gateway.bench.floor")
    p.add_argument("--data-dir", type=Path, required=True)
    p.add_argument("--api-port", type=int, required=True)
    p.add_argument("--web-port", type=int, required=True)
    args = p.parse_args(argv)
    asyncio.run(serve(args.data_dir, args.api_port, args.web_port))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
