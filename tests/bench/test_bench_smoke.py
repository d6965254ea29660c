"""Smoke tests of the benchmarks: each runs with tiny parameters and reports sane JSON.

They check that the benchmarks work, not how fast Setu is: the performance targets are checked
by running the benchmarks themselves (see ``docs/performance.md``).
"""

from __future__ import annotations

import math
from pathlib import Path

from tests.bench.runner import run_bench


def is_fraction(value: object) -> bool:
    return isinstance(value, (int, float)) and 0.0 <= value <= 1.0


def test_relay_benchmark_reports_sane_figures(tmp_path: Path) -> None:
    report = run_bench(
        "bench.relay",
        ["--consults", "1", "--seconds", "4", "--warmup", "1"],
        tmp_path / "relay.json",
        timeout=120,
    )
    assert report["consults"] == 1
    assert report["seconds"] == 4
    for key in ("setu_cpu_per_consult", "stock_cpu_per_consult"):
        assert isinstance(report[key], float)
        assert math.isfinite(report[key])
        assert report[key] > 0
    assert report["cpu_ratio"] > 0
    for server in ("setu", "stock"):
        for kind in ("video", "audio"):
            assert is_fraction(report[f"{server}_{kind}_frames_delivered"])
            raw = report[server]
            assert raw[f"{kind}_sent"] > 0
            assert 0 <= raw[f"{kind}_received"] <= raw[f"{kind}_sent"]
            assert is_fraction(raw[f"worst_direction_{kind}_delivered"])
        assert raw["window_s"] >= 4
        assert raw["server_cpu_s"] > 0
    assert {"python", "aiortc", "av"} <= set(report["versions"])


def test_join_benchmark_reports_sane_figures(tmp_path: Path) -> None:
    report = run_bench(
        "bench.join",
        ["--rounds", "2", "--warmup-rounds", "0"],
        tmp_path / "join.json",
        timeout=90,
    )
    assert report["rounds"] == 2
    samples = report["samples_ms"]
    assert len(samples) == 2
    assert all(isinstance(s, float) and 0 < s < 60_000 for s in samples)
    assert 0 < report["join_p50_ms"] <= report["join_p95_ms"] <= max(samples)
    assert len(report["rounds_detail"]) == 2
    assert {"python", "aiortc", "av"} <= set(report["versions"])
