"""Smoke test of the scaling benchmark: a tiny run on one node and on two reports sane JSON.

It checks that both phases run (on two nodes the nurse and the doctor sign in on different
nodes) and that the report adds up, never the targets: those are checked by running the
benchmark itself (see ``docs/performance.md``).
"""

from __future__ import annotations

import math
from pathlib import Path

from tests.bench.runner import run_bench


def is_fraction(value: object) -> bool:
    return isinstance(value, (int, float)) and 0.0 <= value <= 1.0


def is_positive(value: object) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_scale_benchmark_reports_sane_figures(tmp_path: Path) -> None:
    report = run_bench(
        "bench.scale",
        ["--consults", "1", "--seconds", "3", "--warmup", "1"],
        tmp_path / "scale.json",
        timeout=180,
    )
    assert report["benchmark"] == "scale"
    assert report["consults"] == 1
    assert report["seconds"] == 3
    for n in (1, 2):
        assert is_positive(report[f"cpu_per_consult_{n}"])
        assert 0 < report[f"join_p50_ms_{n}"] < 60_000
        assert is_fraction(report[f"delivered_video_{n}"])
        assert is_fraction(report[f"delivered_audio_{n}"])
        assert isinstance(report[f"redis_cpu_s_{n}"], (int, float))
        assert report[f"redis_cpu_s_{n}"] >= 0
    assert report["scaling_efficiency"] == round(
        report["cpu_per_consult_1"] / report["cpu_per_consult_2"], 3
    )
    assert set(report["targets_met"]) == {"scaling_efficiency", "join_p50_ms_2", "delivered"}

    for n in (1, 2):
        phase = report["phases"][str(n)]
        assert phase["nodes"] == n
        assert phase["window_s"] >= 3
        node_cpu = phase["node_cpu_s"]
        assert len(node_cpu) == n
        assert all(cpu >= 0 for cpu in node_cpu.values())
        # The phase's CPU is all its nodes' CPU, Redis's apart.
        assert math.isclose(sum(node_cpu.values()), phase["server_cpu_s"], abs_tol=0.01)
        assert phase["redis_cpu_s"] == report[f"redis_cpu_s_{n}"]
        # The one consultation's room is held by exactly one node.
        assert sorted(phase["rooms_per_node"].values()) == [0] * (n - 1) + [1]
        assert phase["join_samples_ms"] == [report[f"join_p50_ms_{n}"]]
        for kind in ("video", "audio"):
            assert phase[f"{kind}_sent"] > 0
            assert 0 < phase[f"{kind}_received"] <= phase[f"{kind}_sent"]
    assert {"python", "aiortc", "av"} <= set(report["versions"])
