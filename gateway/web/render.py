"""Server-rendered pages: one Jinja2 environment (autoescaping on), the stylesheet, and the
CSRF cookie set on the way out of every page that has a form."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp_jinja2
import jinja2
from aiohttp import web

from gateway.web import csrf

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"


def setup(app: web.Application) -> None:
    aiohttp_jinja2.setup(
        app,
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=jinja2.select_autoescape(default=True, default_for_string=True),
        undefined=jinja2.StrictUndefined,
    )
    static = app.router.add_static("/static", STATIC, append_version=False)
    static.listeners = frozenset({"web"})  # type: ignore[attr-defined]


def add_templates(app: web.Application, prefix: str, folder: Path) -> None:
    """A feature's own templates, named "prefix/name.html"; they extend the shared base.html."""
    env = aiohttp_jinja2.get_env(app)
    assert env.loader is not None
    env.loader = jinja2.ChoiceLoader(
        [env.loader, jinja2.PrefixLoader({prefix: jinja2.FileSystemLoader(str(folder))})]
    )


def page(
    request: web.Request, template: str, context: dict[str, Any], status: int = 200
) -> web.Response:
    context = {**context, "csrf": csrf.token_for(request)}
    response = aiohttp_jinja2.render_template(template, request, context, status=status)
    csrf.set_cookie(request, response)
    return response


def html_route(route: web.AbstractRoute) -> web.AbstractRoute:
    """Mark a route whose errors are pages for people, not problem+json."""
    assert route.resource is not None
    route.resource.html = True  # type: ignore[attr-defined]
    return route
