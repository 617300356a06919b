"""The load generator, a process of its own so that its CPU is never the gateway's.

Every envelope is sealed (unique jti) before the clock starts, so the figure is the gateway's
and not the sealing's. Requests go over mutual TLS on keep-alive connections. Open loop sends
by the intended time of each request (start + i / rate) and measures latency from that time,
so a slow gateway shows up as queueing in the figures instead of silently slowing the sender
(no coordinated omission).

    python -m gateway.bench.loadgen --url https://127.0.0.1:P --credentials DIR \
        --mode closed --concurrency 32 --count 20000 --duration 10 --warmup 2
    python -m gateway.bench.loadgen ... --mode open --rate 200 --duration 10 --warmup 1

It prints one JSON object on stdout."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import ssl
import sys
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from joserfc.jwk import OKPKey

from gateway.intake.envelope import AUDIENCE, seal

EXAMPLE = (
    Path(__file__).resolve().parents[2] / "schemas" / "examples" / "harm-route.notification.json"
)
AGENCY = "PSNI"
REQUEST_TIMEOUT_SECONDS = 30.0


@dataclass(frozen=True)
class Sample:
    intended: float  # when the request should have started (open loop) or did start (closed)
    done: float
    status: int  # 0 for a transport error


def _body() -> Any:
    return json.loads(EXAMPLE.read_text(encoding="utf-8"))


_worker_state: dict[str, Any] = {}


def _init_sealer(credentials: str) -> None:
    cred = Path(credentials)
    _worker_state["key"] = OKPKey.import_key(json.loads((cred / "signing-key.jwk").read_text()))
    jwks = json.loads((cred / "gateway.jwks.json").read_text())
    _worker_state["enc"] = next(k for k in jwks["keys"] if k["use"] == "enc")
    _worker_state["body"] = _body()


def _seal_many(count: int) -> list[bytes]:
    key, enc, body = _worker_state["key"], _worker_state["enc"], _worker_state["body"]
    out = []
    for _ in range(count):
        claims = {
            "iss": AGENCY,
            "aud": AUDIENCE,
            "iat": int(time.time()),
            "jti": f"{AGENCY}-bench-{uuid.uuid4().hex}",
            "format": "cmr-notification/1",
            "body": body,
        }
        out.append(seal(claims, key, "Ed25519", enc).encode())
    return out


def seal_envelopes(credentials: Path, count: int, workers: int) -> list[bytes]:
    """Unique envelopes, sealed on every core (nothing else runs while this does)."""
    if count <= 0:
        return []
    if workers <= 1 or count < 200:
        _init_sealer(str(credentials))
        return _seal_many(count)
    chunk = -(-count // (workers * 4))
    sizes = [min(chunk, count - i) for i in range(0, count, chunk)]
    with ProcessPoolExecutor(workers, initializer=_init_sealer, initargs=(str(credentials),)) as ex:
        return [e for part in ex.map(_seal_many, sizes) for e in part]


def client_context(credentials: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(credentials / "ca.crt"))
    ctx.load_cert_chain(credentials / "client.crt", credentials / "client.key")
    return ctx


async def _post(session: aiohttp.ClientSession, body: bytes) -> int:
    try:
        async with session.post(
            "/v1/notifications", data=body, headers={"Content-Type": "application/jose"}
        ) as resp:
            await resp.read()
            return resp.status
    except (aiohttp.ClientError, TimeoutError, OSError):
        return 0


def _session(url: str, ctx: ssl.SSLContext, connections: int) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(ssl=ctx, limit=connections, keepalive_timeout=120)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_SECONDS)
    return aiohttp.ClientSession(base_url=url, connector=connector, timeout=timeout)


async def _warm_connections(session: aiohttp.ClientSession, envelopes: list[bytes], n: int) -> None:
    """Open the keep-alive connections before timing: each is a full mTLS handshake, which is
    not what the figures are about. The envelopes used here are not counted."""
    await asyncio.gather(*(_post(session, envelopes.pop()) for _ in range(min(n, len(envelopes)))))


async def closed_loop(
    url: str,
    ctx: ssl.SSLContext,
    envelopes: list[bytes],
    concurrency: int,
    duration: float,
    warmup: float,
    ready_file: Path | None = None,
) -> tuple[list[Sample], float, float]:
    async with _session(url, ctx, concurrency) as session:
        await _warm_connections(session, envelopes, concurrency)
        _ready(ready_file)
        queue = iter(envelopes)
        samples: list[Sample] = []
        start = time.perf_counter()
        deadline = start + warmup + duration

        async def worker() -> None:
            for body in queue:
                began = time.perf_counter()
                if began >= deadline:
                    return
                status = await _post(session, body)
                samples.append(Sample(began, time.perf_counter(), status))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        end = min(time.perf_counter(), deadline)
    return samples, start + warmup, end


async def open_loop(
    url: str,
    ctx: ssl.SSLContext,
    envelopes: list[bytes],
    rate: float,
    duration: float,
    warmup: float,
    connections: int,
    ready_file: Path | None = None,
) -> tuple[list[Sample], float, float]:
    async with _session(url, ctx, connections) as session:
        # As many connections as a hiccup could need, opened now: a pool that grows during
        # the run adds TLS handshakes to the gateway's work exactly when it is behind.
        await _warm_connections(session, envelopes, min(connections, 64))
        _ready(ready_file)
        total = min(len(envelopes), int(rate * (warmup + duration)))
        samples: list[Sample] = []
        tasks: list[asyncio.Task[None]] = []
        start = time.perf_counter() + 0.05

        async def one(body: bytes, intended: float) -> None:
            status = await _post(session, body)
            samples.append(Sample(intended, time.perf_counter(), status))

        for i in range(total):
            intended = start + i / rate
            delay = intended - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(envelopes[i], intended)))
        await asyncio.gather(*tasks)
    return samples, start + warmup, start + warmup + duration


def _ready(path: Path | None) -> None:
    if path is not None:
        path.touch()


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, max(0, round(q / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[index]


def summarise(
    samples: list[Sample], window_start: float, window_end: float, mode: str
) -> dict[str, Any]:
    """Only what falls in the measuring window counts: in closed loop what completed in it
    (a rate), in open loop what was due in it (latency from the intended start)."""
    if mode == "closed":
        counted = [s for s in samples if window_start <= s.done <= window_end]
    else:
        counted = [s for s in samples if window_start <= s.intended < window_end]
    seconds = max(window_end - window_start, 1e-9)
    accepted = sum(1 for s in counted if s.status == 202)
    errors = [s for s in counted if s.status != 202]
    kinds: dict[str, int] = {}
    for s in errors:
        kinds[str(s.status)] = kinds.get(str(s.status), 0) + 1
    latencies = sorted((s.done - s.intended) * 1000 for s in counted)
    return {
        "mode": mode,
        "seconds": round(seconds, 3),
        "requests": len(counted),
        "accepted": accepted,
        "accepted_per_second": round(accepted / seconds, 1),
        "errors": len(errors),
        "error_kinds": kinds,
        "latency_ms": {
            "p50": _round(percentile(latencies, 50)),
            "p95": _round(percentile(latencies, 95)),
            "p99": _round(percentile(latencies, 99)),
            "max": _round(latencies[-1] if latencies else None),
        },
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m gateway.bench.loadgen")
    p.add_argument("--url", required=True)
    p.add_argument("--credentials", type=Path, required=True)
    p.add_argument("--mode", choices=["closed", "open"], required=True)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--rate", type=float, default=100.0)
    p.add_argument("--count", type=int, default=0, help="closed loop: envelopes to seal at most")
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--connections", type=int, default=128, help="open loop: keep-alive pool size")
    p.add_argument("--seal-workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--cpu", type=int, default=-1, help="pin to this CPU once sealing is done")
    p.add_argument("--ready-file", type=Path, help="created just before the clock starts")
    p.add_argument("--samples", type=Path, help="write every request's timing here (CSV)")
    p.add_argument(
        "--distinct",
        type=int,
        default=0,
        help="seal only this many and send them over and over (for a server that does not "
        "open them: the HTTP floor)",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    ctx = client_context(args.credentials)
    warm = args.concurrency if args.mode == "closed" else min(args.connections, 64)
    if args.mode == "closed":
        count = args.count or 1000
    else:
        count = int(args.rate * (args.warmup + args.duration)) + 1
    sealing_started = time.perf_counter()
    distinct = min(args.distinct, count + warm) if args.distinct > 0 else count + warm
    envelopes = seal_envelopes(args.credentials, distinct, args.seal_workers)
    envelopes = (envelopes * -(-(count + warm) // len(envelopes)))[: count + warm]
    sealing = time.perf_counter() - sealing_started
    if args.cpu >= 0 and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.cpu})
    if args.mode == "closed":
        samples, w0, w1 = asyncio.run(
            closed_loop(
                args.url,
                ctx,
                envelopes,
                args.concurrency,
                args.duration,
                args.warmup,
                args.ready_file,
            )
        )
    else:
        samples, w0, w1 = asyncio.run(
            open_loop(
                args.url,
                ctx,
                envelopes,
                args.rate,
                args.duration,
                args.warmup,
                args.connections,
                args.ready_file,
            )
        )
    result = summarise(samples, w0, w1, args.mode)
    if args.samples is not None:
        with args.samples.open("w") as fh:
            fh.write("intended_s,latency_ms,status\n")
            for s in sorted(samples, key=lambda s: s.intended):
                fh.write(f"{s.intended - w0:.4f},{(s.done - s.intended) * 1000:.2f},{s.status}\n")
    result["sealed"] = distinct
    result["completed"] = len(samples)  # every request answered after the ready file, warm-up too
    result["sealing_seconds"] = round(sealing, 2)
    if args.mode == "open":
        result["offered_per_second"] = args.rate
    else:
        result["concurrency"] = args.concurrency
        # Every sealed envelope was sent before the deadline: the gateway outran the supply.
        result["exhausted"] = len(samples) >= len(envelopes)
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
