"""A year of the panel on the command line, from intake to the Board's decision and the completed
review, with the annual report reading the outcome: notifications arrive over the agency API;
everything the secretariat does after is `cmr-gateway` commands, on the same injected clock
(the commands' SystemClock reads it). On SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import re
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from pypdf import PdfReader

from gateway.cli import main
from gateway.clock import FrozenClock, SystemClock
from gateway.settings import Settings
from tests.support import running_gateway
from tests.test_meetings import (
    MEMBERS,
    answer,
    at,
    item,
    meeting_settings,
    notify,
    record,
)


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(at(2027, 1, 4, 9))


def commands_read(clock: FrozenClock, monkeypatch: pytest.MonkeyPatch) -> None:
    """From now on the commands' SystemClock tells the injected time. (Not earlier: the
    development certificates are dated by it, and TLS checks them against the real time.)"""
    monkeypatch.setattr(SystemClock, "now", lambda _self: clock.now())


class Cli:
    def __init__(self, settings: Settings, clock: FrozenClock, capsys: Any, tmp: Path) -> None:
        self.data_dir = str(settings.data_dir)
        self.clock = clock
        self.capsys = capsys
        self.tmp = tmp

    async def __call__(self, *argv: str, when: datetime | None = None, code: int = 0) -> str:
        if when is not None:
            self.clock.set(when)
        self.capsys.readouterr()
        got = await asyncio.to_thread(main, ["--data-dir", self.data_dir, *argv])
        out, err = self.capsys.readouterr()
        assert got == code, f"{argv}: {out}{err}"
        return out + err

    async def record(self, document: dict[str, Any], when: datetime) -> str:
        path = self.tmp / f"{document['meeting']}.json"
        path.write_text(json.dumps(document))
        return await self("meeting", "record", str(path), when=when)


async def test_a_year_on_the_command_line(
    installation: Settings,
    clock: FrozenClock,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = meeting_settings(installation)
    cli = Cli(settings, clock, capsys, tmp_path)
    async with running_gateway(settings, clock) as gw:
        await gw.agency("PSNI")
        commands_read(clock, monkeypatch)
        a, b, c = await notify(gw), await notify(gw), await notify(gw)
        out = await cli("request", "create", a, "--agency", "EA")
        request_a = re.search(r"request (R-\w+)", out).group(1)  # type: ignore[union-attr]
        await cli("request", "create", c, "--agency", "BHSCT")
        async with gw.services() as s:
            await answer(s, request_a)  # the agency, through its link
        out = await cli("case", "ready", c, code=2)
        assert "open information requests (BHSCT)" in out
        assert "ready_for_panel" in await cli("case", "ready", a)
        await cli("case", "ready", b)
        listing = await cli("meeting", "list", "--year", "2027")
        assert "WARNING" not in listing
        assert "second Thursday of March, June, September and December" in listing
        assert re.findall(r"^M-2027-\d\d", listing, re.M) == [
            "M-2027-03",
            "M-2027-06",
            "M-2027-09",
            "M-2027-12",
        ]

        # March: compiled at the cut-off, issued by the secretariat, decided.
        assert "compiled M-2027-03" in await cli("meeting", "tick", when=at(2027, 2, 26, 17, 30))
        assert "draft version 1" in await cli(
            "meeting", "compile", "M-2027-03", "--aob", "Dates of the 2028 meetings"
        )
        assert "version 1 issued; notice to 10" in await cli("meeting", "issue", "M-2027-03")
        out = await cli("meeting", "pack", "M-2027-03", "--out", str(tmp_path))
        pack = Path(out.split("wrote ", 1)[1].strip())
        text = "\n".join(p.extract_text() for p in PdfReader(pack).pages)
        assert a in text and b in text and c in text and "OFFICIAL-SENSITIVE" in text
        assert "Known since 2024." in text
        out = await cli.record(
            record("M-2027-03", [item(a, "recommend"), item(b, "defer", "Awaiting the trial.")]),
            at(2027, 3, 11, 15),
        )
        assert f"{a} recommend, {b} defer" in out
        await cli("board", "decide", a, "commissioned", "--on", "2027-03-25", when=at(2027, 3, 26))
        await cli("cmr", "start", a, "--on", "2027-04-05", when=at(2027, 4, 6))

        # BHSCT never answers: its request expires, and the case is ready for June.
        assert "1 requests expired" in await cli("request", "chase", when=at(2027, 5, 4))
        await cli("case", "ready", c)

        # June: compiled and noticed by the tick alone.
        assert "compiled M-2027-06" in await cli("meeting", "tick", when=at(2027, 5, 27, 17, 30))
        assert "notices served M-2027-06" in await cli(
            "meeting", "tick", when=at(2027, 6, 2, 9, 30)
        )
        assert "notices served none" in await cli("meeting", "tick")
        out = await cli("meeting", "pack", "M-2027-06", "--format", "json", "--out", str(tmp_path))
        june = json.loads(Path(out.split("wrote ", 1)[1].strip()).read_text())
        sections = {s["id"]: [i["reference"] for i in s["items"]] for s in june["sections"]}
        assert sections["deferred"] == [b] and sections["new"] == [c]
        assert sections["cmr_progress"] == [a]
        assert june["sections"][1]["items"][0]["deferrals"]["count"] == 1
        await cli.record(
            record("M-2027-06", [item(b, "do_not_recommend"), item(c, "defer")]),
            at(2027, 6, 10, 15),
        )
        await cli(
            "board", "decide", b, "not-commissioned", "--on", "2027-06-24", when=at(2027, 6, 25)
        )

        # September: inquorate, reconvened two weeks on, decided with the casting vote.
        await cli("meeting", "tick", when=at(2027, 8, 26, 17, 30))
        await cli("meeting", "tick", when=at(2027, 9, 1, 9, 30))
        out = await cli.record(record("M-2027-09", [], present=MEMBERS[:5]), at(2027, 9, 9, 15))
        assert "inquorate (5 present, quorum 6); reconvened as M-2027-09-23" in out
        await cli("meeting", "tick", when=at(2027, 9, 10, 17, 30))
        await cli("meeting", "tick", when=at(2027, 9, 15, 9, 30))
        tie = {"for": ["chair", "ea"], "against": ["bhsct", "nhsct"], "abstain": ["shsct"]}
        out = await cli.record(
            record(
                "M-2027-09-23",
                [item(c, "recommend", votes=tie, casting_vote="for")],
                interests=[{"member": "pbni", "reference": c, "nature": "Worked with the family"}],
            ),
            at(2027, 9, 23, 15),
        )
        assert f"{c} recommend" in out
        await cli("board", "decide", c, "commissioned", "--on", "2027-10-14", when=at(2027, 10, 15))

        # December: only progress to note.
        await cli("meeting", "tick", when=at(2027, 11, 26, 17, 30))
        await cli("meeting", "tick", when=at(2027, 12, 1, 9, 30))
        await cli.record(record("M-2027-12", []), at(2027, 12, 9, 15))
        await cli(
            "cmr",
            "complete",
            a,
            "--on",
            "2027-12-01",
            "--recommendations",
            "7",
            "--theme",
            "information sharing",
            "--theme",
            "interpreters",
        )
        shown = await cli("case", "show", a)
        assert "cmr_completed" in shown and "themes: information sharing, interpreters" in shown
        assert "not_commissioned" in await cli("case", "show", b)
        listing = await cli("meeting", "list", "--year", "2027")
        statuses = dict(re.findall(r"^(M-[\d-]+)\t[^\t]+\t[^\t]+\t(\w+)", listing, re.M))
        assert statuses == {
            "M-2027-03": "held",
            "M-2027-06": "held",
            "M-2027-09": "inquorate",
            "M-2027-09-23": "held",
            "M-2027-12": "held",
        }
        # Mistakes are one line, exit 2.
        out = await cli("board", "decide", a, "commissioned", "--on", "2027-12-01", code=2)
        assert out.startswith("error: notification") and "cmr_completed" in out
        await cli("meeting", "issue", "M-2027-12", code=2)
        await cli("case", "ready", "CMRN-2027-9999", code=2)

        figures = json.loads(await cli("report", "annual", "--year", "2027-28", "--out", "-"))
        assert figures["considered_by_board"]["notifications"] == 2  # b and c; a in March
        assert figures["considered_by_board"]["commissioned"] == 1
        assert figures["since_inception"]["commissioned"] == 2
        assert figures["since_inception"]["completed"] == 1
        assert figures["completed_in_year"]["recommendations"] == 7
        assert "audit chain intact" in await cli("audit", "verify")


async def test_a_short_calendar_is_a_loud_warning_in_the_list(
    installation: Settings,
    clock: FrozenClock,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    commands_read(clock, monkeypatch)
    short = tmp_path / "meetings.toml"
    text = (Path(__file__).resolve().parent.parent / "config" / "meetings.toml").read_text()
    short.write_text(text.replace('"March", "June", "September", "December"', '"March"'))
    settings = meeting_settings(installation, meetings_file=str(short))
    cli = Cli(settings, clock, capsys, tmp_path)
    out = await cli("meeting", "list")
    assert "WARNING: 2027 has 1 panel meeting planned; Schedule 5 requires at least 4" in out
    out = await cli("meeting", "add", "2027-01-08T10:00", code=2)
    assert "seven clear days" in out
    assert "added M-2027-05-20" in await cli("meeting", "add", "2027-05-20T14:00")
    await cli("meeting", "add", "2027-08-05T14:00", "--online-link", "https://meet.sbni.example/x")
    await cli("meeting", "add", "2027-11-04T14:00", "--place", "Derry~Londonderry")
    out = await cli("meeting", "list", "--year", "2027")
    assert "WARNING" not in out
    assert "M-2027-11-04\tThu 04 Nov 2027 14:00\textra\tplanned" in out
