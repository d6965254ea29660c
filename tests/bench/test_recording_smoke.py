"""Smoke test of the recording benchmark: a tiny run reports complete, sane JSON.

It checks that the benchmark works (three windows, a recording it could read back), never
whether recording is cheap or well timed enough: the targets are checked by running the
benchmark itself (see ``docs/performance.md``).
"""

from __future__ import annotations

import math
from pathlib import Path

from tests.bench.runner import run_bench

PHASES = ("A1", "B", "A2")


def is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def is_delivered(value: object) -> bool:
    # A fraction, but frames in flight at a window's edges can count on either side of it.
    return isinstance(value, (int, float)) and math.isfinite(value) and 0.0 <= value <= 1.1


def test_recording_benchmark_reports_sane_figures(tmp_path: Path) -> None:
    report = run_bench(
        "bench.recording",
        ["--consults", "1", "--seconds", "3", "--warmup", "1"],
        tmp_path / "recording.json",
        timeout=120,
    )
    assert report["benchmark"] == "recording"
    assert report["consults"] == 1
    assert report["seconds"] == 3

    # The headline figures: a number each, whatever their value.
    assert is_number(report["recording_cpu_overhead_per_consult"])
    assert is_number(report["av_offset_ms"])
    assert report["av_offset_ms"] >= 0
    assert is_number(report["duration_error_s"])
    assert report["duration_error_s"] >= 0
    assert set(report["overhead_by_server_thread"]) == {
        "event_loop",
        "new_threads",
        "other_threads",
    }
    assert set(report["targets_met"]) == {
        "recording_cpu_overhead_per_consult",
        "av_offset_ms",
        "duration_error_s",
    }
    assert all(isinstance(met, bool) for met in report["targets_met"].values())
    assert isinstance(report["media_complete"], bool)
    assert set(report["client_peers"]) == {"probe-spoke", "probe-hub"}

    # Every phase ran for its window, cost the server CPU and delivered the media.
    for phase in PHASES:
        raw = report["phases"][phase]
        assert raw["seconds"] >= 3
        assert raw["server_cpu_s"] > 0
        assert report["cpu_per_consult"][phase] > 0
        for kind in ("video", "audio"):
            assert raw[f"{kind}_sent"] > 0
            assert is_delivered(report[f"{kind}_frames_delivered"][phase])
        for part in ("event_loop", "new_threads", "other_threads"):
            assert is_number(raw[f"server_{part}_cpu_s"])
        assert raw["server_new_threads_cpu_s"] >= 0
        assert raw["server_context_switches_per_s"] >= 0

    # The probe's two files were read back: pictures, beeps, a span.
    probe = report["probe"]
    assert 3 <= probe["recording_span_s"] < 30
    for seat in ("spoke", "hub"):
        file = probe["files"][seat]
        assert file["video_frames_read"] > 0
        assert file["beeps"] > 0
        assert is_number(file["av_offset_ms"])
    recorded = report["recorded"]
    assert recorded["files"] == 2
    assert recorded["video_frames"] > 0
    assert recorded["audio_frames"] > 0
    assert {"python", "aiortc", "av"} <= set(report["versions"])
    assert report["machine"]["cpus"] >= 1
