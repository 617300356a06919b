"""Typed keys of the application's state (aiohttp AppKeys instead of module globals)."""

from __future__ import annotations

import ssl
from dataclasses import dataclass

from aiohttp import web

from gateway.clock import Clock
from gateway.http.metrics import Metrics
from gateway.http.tls import ProxyCertificates
from gateway.services import Services
from gateway.settings import Settings


@dataclass(frozen=True)
class Listeners:
    api: ssl.SSLContext
    web: ssl.SSLContext


SETTINGS = web.AppKey("settings", Settings)
CLOCK = web.AppKey("clock", Clock)
SERVICES = web.AppKey("services", Services)
METRICS = web.AppKey("metrics", Metrics)
LISTENERS = web.AppKey("listeners", Listeners)
PROXIES = web.AppKey("proxies", ProxyCertificates)
