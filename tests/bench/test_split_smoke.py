"""Smoke test of the split control: a tiny run relays every datagram and reports sane JSON.

It checks that both variants ran on one relay and on two, and that the figures add up, never
what they are: those are measured by running the benchmark itself (``docs/performance.md``).
"""

from __future__ import annotations

import math
from pathlib import Path

from tests.bench.runner import run_bench


def test_split_control_reports_sane_figures(tmp_path: Path) -> None:
    report = run_bench(
        "bench.split",
        ["--flows", "2", "--seconds", "2", "--work", "20", "--stages", "5"],
        tmp_path / "split.json",
        timeout=180,
    )
    assert report["benchmark"] == "split"
    assert report["rounds"] == [1, 2, 2, 1]
    assert set(report["variants"]) == {"loop", "path"}
    assert report["variants"]["loop"]["stages"] == 1
    assert report["variants"]["path"]["stages"] == 5
    for name, variant in report["variants"].items():
        assert report[f"split_efficiency_{name}"] == variant["split_efficiency"]
        # From the unrounded figures.
        assert math.isclose(
            variant["split_efficiency"],
            variant["cpu_per_packet_us_1"] / variant["cpu_per_packet_us_2"],
            abs_tol=0.005,
        )
        for n in (1, 2):
            phase = variant["phases"][str(n)]
            assert phase["relays"] == n
            # Two rounds of half the window each.
            assert len(phase["cpu_by_round_s"]) == 2
            assert math.isclose(phase["window_s"], 2, abs_tol=0.2)
            # On loopback every datagram comes back (a few may still be on their way when a
            # window closes, or echo one sent just before it opened).
            assert phase["packets_sent"] > 0
            assert abs(phase["packets_relayed"] - phase["packets_sent"]) <= 8
            assert phase["relay_cpu_s"] > 0
            assert phase["cpu_per_packet_us"] == report[f"cpu_per_packet_us_{name}_{n}"] > 0
            assert 0 < phase["wakeups_per_packet"] < 2
