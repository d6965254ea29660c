"""Smoke test of the queue benchmark: a short run reports complete, correct JSON.

It checks that the benchmark works and that the waiting room lost or duplicated no token, never
how fast it was: the throughput and latency targets are checked by running the benchmark itself
(see ``docs/performance.md``).
"""

from __future__ import annotations

import math
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tests.bench.runner import run_bench

TIMEOUT_S = 120.0


def run_queue_bench(args: list[str], json_path: Path) -> dict[str, Any]:
    return run_bench("bench.queue", args, json_path, TIMEOUT_S)


def is_positive(value: object) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_queue_benchmark_reports_correct_figures(tmp_path: Path) -> None:
    report = run_queue_bench(
        ["--seconds", "2", "--hubs", "2", "--concurrency", "4", "--processes", "2"],
        tmp_path / "queue.json",
    )
    assert report["benchmark"] == "queue"
    assert report["seconds"] == 2
    for key in (
        "issue_ops_per_s",
        "issue_p50_ms",
        "issue_p99_ms",
        "call_next_ops_per_s",
        "call_next_p50_ms",
        "call_next_p99_ms",
        "redis_server_cpu_s",
    ):
        assert is_positive(report[key]), key
    assert report["issue_p50_ms"] <= report["issue_p99_ms"]
    assert report["call_next_p50_ms"] <= report["call_next_p99_ms"]

    # Correctness, whatever the speed: no token called twice, none lost.
    assert report["duplicates"] == 0
    assert report["lost"] == 0
    checks = report["checks"]
    assert checks["tokens_issued_acknowledged"] == report["issue"]["calls"] > 0
    assert checks["tokens_called"] == report["call_next"]["calls"] > 0
    assert (
        checks["tokens_called"]
        + checks["tokens_still_waiting"]
        + checks["tokens_held_for_next_window"]
        == checks["tokens_issued_acknowledged"]
    )
    assert checks["wrong_state"] == 0
    assert checks["tokens_issued_twice"] == 0
    assert report["issue"]["errors"] == {}
    assert report["call_next"]["errors"] == {}

    clients = report["clients"]
    assert clients["processes"] == 2
    assert sum(clients["coroutines_per_process"]) == report["concurrency"] == 4
    assert report["redis"]["started_by_benchmark"] is True
    assert {"calls", "usec"} <= set(report["call_next"]["redis_commandstats"]["evalsha"])
    assert set(report["targets_met"]) == {
        "call_next_ops_per_s",
        "call_next_p99_ms",
        "duplicates",
        "lost",
    }

    # The redis-server it started is gone.
    url = urlsplit(report["redis"]["url"])
    with socket.socket() as s:
        assert s.connect_ex((url.hostname or "127.0.0.1", url.port or 6379)) != 0
