"""The bench's own smoke test: a tiny run (SQLite only, one rate, tiny counts) produces every
figure in its JSON and writes the Markdown table. No timing is asserted: this machine's speed
is what the bench reports, not what the suite checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.bench import report
from gateway.bench.cli import main


def test_a_tiny_run_reports_every_figure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "bench-results"
    rates, growth, packs = [20], [20, 60], [2]
    code = main(
        [
            "--out",
            str(out),
            "--databases",
            "sqlite",
            "--growth-databases",
            "sqlite",
            "--ceiling-seconds",
            "0.5",
            "--closed-seconds",
            "1",
            "--floor-seconds",
            "1",
            "--open-seconds",
            "1",
            "--warmup-seconds",
            "0.2",
            "--concurrency",
            "4",
            "--rates",
            ",".join(map(str, rates)),
            "--growth",
            ",".join(map(str, growth)),
            "--growth-seconds",
            "1",
            "--pack-sizes",
            ",".join(map(str, packs)),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "ingest / ceiling (sqlite):" in printed

    result = json.loads((out / "bench.json").read_text())
    for key in report.figure_keys(rates, growth, packs):
        report.lookup(result, key)  # KeyError names the missing figure
    # What ran has numbers; what did not has its reason.
    measured = [
        "ceiling.per_second",
        "floor.per_second",
        "floor.per_cpu_second",
        "floor.ratio_bound",
        "required.validations_per_second",
        "required.receipts_per_second",
        "required.stored_per_cpu_second",
        "required.ratio_bound",
        "ingest.sqlite.closed.accepted_per_second",
        "ingest.sqlite.ingest_over_ceiling",
        "ingest.sqlite.open.20.latency_ms.p99",
        "ingest.sqlite.peak_rss_mib",
        "growth.sqlite.runs.20.accepted_per_second",
        "growth.sqlite.runs.60.accepted_per_second",
        "growth.sqlite.ratio",
        "peak_rss_mib",
    ]
    for key in measured:
        assert isinstance(report.lookup(result, key), int | float), key
    assert result["floor"]["errors"] == 0
    assert 0 < result["required"]["ratio_bound"] < result["floor"]["ratio_bound"] < 1
    assert result["ingest"]["sqlite"]["closed"]["errors"] == 0
    assert result["ingest"]["sqlite"]["closed_errors"] == 0
    assert result["ingest"]["postgresql"]["skipped"]
    assert result["growth"]["postgresql"]["skipped"]
    if result["pack"]["available"]:
        assert isinstance(report.lookup(result, "pack.2.pdf_seconds"), float)
    else:
        assert result["pack"]["reason"]

    table = (out / "bench.md").read_text()
    assert "| figure |" in table
    assert "ingest / ceiling" in table
    assert "HTTP floor" in table
    assert "bound from floor + open + validation + receipt + storing" in table
    assert "open loop 20/s: p99 ms" in table
    assert "growth ratio 60 / 20" in table
    assert "peak RSS" in table
    # The installations are removed afterwards; only the results stay.
    assert sorted(p.name for p in out.iterdir()) == ["bench.json", "bench.md"]
