"""The agency API's intake handlers: thin, everything else is the IntakeService."""

from __future__ import annotations

from aiohttp import web

from gateway.errors import PayloadTooLarge, UnsupportedMediaType
from gateway.http.appkeys import SERVICES, SETTINGS
from gateway.http.middleware import AGENCY, REQUEST_ID, only_on
from gateway.intake.receipts import rfc3339


async def submit(request: web.Request) -> web.Response:
    if request.content_type != "application/jose":
        raise UnsupportedMediaType()
    limit = request.app[SETTINGS].max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge()
    # Read by hand: the app-wide client_max_size is the web listener's (attachments).
    body = bytearray()
    while chunk := await request.content.read(65536):
        body.extend(chunk)
        if len(body) > limit:
            raise PayloadTooLarge()
    raw = bytes(body)
    result = await request.app[SERVICES].intake.submit(
        request[AGENCY], raw.strip(), request[REQUEST_ID]
    )
    return web.json_response(result.body(), status=202 if result.created else 200)


async def status(request: web.Request) -> web.Response:
    found = await request.app[SERVICES].intake.status(
        request[AGENCY], request.match_info["reference"]
    )
    return web.json_response(
        {
            "reference": found.reference,
            "status": found.status,
            "format": found.format,
            "received_at": rfc3339(found.received_at),
            "updated_at": rfc3339(found.updated_at),
        }
    )


def setup(app: web.Application) -> None:
    only_on(app.router.add_post("/v1/notifications", submit), "api")
    only_on(app.router.add_get("/v1/notifications/{reference}", status), "api")
