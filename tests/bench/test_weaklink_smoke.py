"""``bench.weaklink``: how its figures are computed, and a very short run of the real thing.

The first tests specify the analysis on hand-made samples (no browser, no link). The smoke test
runs one scenario for a few seconds, tuning on and off, through ``python -m bench.weaklink`` and
checks the shape and sanity of its JSON report, never whether the targets are met: those are
checked by running the benchmark itself (see ``docs/performance.md``). It needs root, ``ip`` and
Chromium, like the browser tests.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from bench.weaklink import (
    AUDIO_RATE,
    DIRECTIONS,
    TARGETS,
    audio_gap_ms,
    direction_metrics,
    intervals,
    verdicts,
    video_freezes,
)
from tests.bench.runner import run_bench

SECOND = AUDIO_RATE


def sample(
    t: float, pc: int | None, received: float, concealed: float, frames: float
) -> dict[str, Any]:
    return {
        "t": t,
        "pc": pc,
        "a": {"totalSamplesReceived": received, "concealedSamples": concealed},
        "v": {"framesDecoded": frames},
    }


def steady(start: float, end: float, pc: int = 1, step: float = 100) -> list[dict[str, Any]]:
    """Audio playing without concealment and 10 frames a second, polled every ``step`` ms."""
    out, t = [], start
    while t <= end:
        out.append(sample(t, pc, (t - start) * SECOND / 1000, 0, (t - start) // 100))
        t += step
    return out


def test_intervals_count_a_new_peer_connection_from_zero() -> None:
    samples = [
        sample(0, 1, 48_000, 0, 10),
        sample(100, 1, 52_800, 480, 11),
        sample(200, 2, 2_400, 0, 1),  # a new peer connection: its counters start at zero
        sample(300, None, 0, 0, 0),  # no peer connection at all
    ]
    spans = intervals(samples)
    assert [(i.received, i.concealed, i.played, i.frames) for i in spans] == [
        (4_800, 480, 4_320, 1),
        (2_400, 0, 2_400, 1),
        (0, 0, 0, 0),
    ]


def test_audio_gap_is_a_silent_run_plus_the_concealment_beside_it() -> None:
    # 100 ms polls: played, played with 30 ms concealed, 3 polls of nothing played, 20 ms
    # concealed, played.
    concealed_ms = [0, 30, 100, 100, 100, 20, 0]
    samples = [sample(0, 1, 0, 0, 0)]
    received = concealed = 0.0
    for k, ms in enumerate(concealed_ms, start=1):
        received += 4_800
        concealed += ms * SECOND / 1000
        samples.append(sample(k * 100, 1, received, concealed, 0))
    upper, lower = audio_gap_ms(intervals(samples))
    assert lower == pytest.approx(300)
    assert upper == pytest.approx(350)


def test_audio_gap_counts_time_without_any_receiver() -> None:
    samples = [*steady(0, 1000), *(sample(t, None, 0, 0, 0) for t in (1100, 1200, 1300))]
    samples += steady(1400, 2000, pc=2)
    upper, lower = audio_gap_ms(intervals(samples))
    assert lower == pytest.approx(400)  # 1000 to 1400: no samples produced at all
    assert upper == pytest.approx(400)


def test_video_freezes_include_the_window_edges() -> None:
    samples = [sample(t, 1, 0, 0, 5 if t >= 300 else 0) for t in range(0, 1100, 100)]
    assert video_freezes(intervals(samples), 0, 1000) == [300, 700]


def test_direction_metrics_of_a_clean_window() -> None:
    samples = steady(0, 10_000)
    figures = direction_metrics(samples, samples, [], "spoke", 0, 10_000)
    assert figures["audio_continuity"] == pytest.approx(1.0)
    assert figures["max_audio_gap_ms"] == 0
    assert figures["video_fps"] == pytest.approx(10, abs=0.2)
    assert figures["max_video_freeze_ms"] == pytest.approx(100, abs=1)
    assert figures["time_to_audio_only_s"] is None


def test_direction_metrics_of_an_outage() -> None:
    # Media stops at 3 s; the link returns at 6 s; media flows again from 6.5 s.
    samples = steady(0, 3000)
    samples += [sample(t, 1, 3 * SECOND, 0, 30) for t in range(3100, 6600, 100)]
    samples += [
        sample(t, 1, 3 * SECOND + (t - 6500) * 48, 0, 30 + (t - 6500) // 100)
        for t in range(6600, 10_100, 100)
    ]
    figures = direction_metrics(samples, samples, [], "spoke", 0, 10_000, link_back_ms=6000)
    assert figures["time_to_video_resume_s"] == pytest.approx(0.6, abs=0.01)
    assert figures["max_audio_gap_lower_ms"] == pytest.approx(3500, abs=1)
    assert figures["audio_continuity"] == pytest.approx(0.65, abs=0.01)


def test_the_freeze_after_a_drop_is_told_apart_from_a_later_pause() -> None:
    # 10 fps; the drop at 2 s costs 700 ms of video; from 6 s the sender pauses for good.
    samples, frames = [], 0
    for t in range(0, 10_100, 100):
        if t <= 2000 or 2700 <= t <= 6000:
            frames += 1
        samples.append(sample(t, 1, t * 48, 0, frames))
    figures = direction_metrics(samples, samples, [], "spoke", 0, 10_000, drop_ms=2000)
    assert figures["freeze_after_drop_ms"] == pytest.approx(700)
    assert figures["max_video_freeze_ms"] == pytest.approx(4000)


def test_verdicts_hold_only_when_every_judged_direction_meets_the_target() -> None:
    run: dict[str, Any] = {"call_survived": True}
    for direction in DIRECTIONS:
        run[direction] = {"audio_continuity": 0.99, "max_audio_gap_ms": 100, "video_fps": 9.0}
    run["hub_to_spoke"]["video_fps"] = 4.0
    result = verdicts("rural", run)
    assert set(result) == {figure for figure, _, _ in TARGETS["rural"]}
    assert result["audio_continuity"]["met"] is True
    assert result["video_fps"] == {
        "target": ">= 5",
        "values": {"spoke_to_hub": 9.0, "hub_to_spoke": 4.0},
        "met": False,
    }


def is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@pytest.mark.browser
@pytest.mark.timeout(300)
def test_weaklink_benchmark_reports_both_runs_side_by_side(tmp_path: Path) -> None:
    report = run_bench(
        "bench.weaklink",
        ["--scenario", "rural", "--seconds", "4", "--warmup", "1"],
        tmp_path / "weaklink.json",
        timeout=240,
    )
    assert report["benchmark"] == "weaklink"
    assert report["window_s"] == 4
    assert set(report["scenarios"]) == {"rural"}
    rural = report["scenarios"]["rural"]
    assert rural["link"]["rate_kbit"] == 300
    assert set(rural["runs"]) == {"on", "off"}
    assert set(rural["targets_met"]) == {figure for figure, _, _ in TARGETS["rural"]}
    for tuning, run in rural["runs"].items():
        assert "error" not in run, run.get("error")
        assert run["tuning"] == tuning
        assert isinstance(run["call_survived"], bool)
        assert 3.5 <= run["window_s"] < 10
        for direction in DIRECTIONS:
            figures = run[direction]
            assert 0 <= figures["audio_continuity"] <= 1
            for key in ("max_audio_gap_ms", "video_fps", "max_video_freeze_ms"):
                assert is_number(figures[key]), (key, figures[key])
                assert figures[key] >= 0, (key, figures[key])
            assert figures["video_frames_decoded"] > 0
            assert len(run["timeline"][direction]) >= 3
        assert all(isinstance(v["met"], bool) for v in run["verdicts"].values())
        for direction in ("to_server", "to_spoke"):
            assert run["link"][direction]["packets_in"] > 0
        assert {"nurse", "doctor"} == set(run["pages"])
        assert run["pages"]["nurse"]["seat"] == "spoke"
        assert run["pages"]["doctor"]["seat"] == "hub"
    # Only the tuned server sends quality steps.
    assert any(
        q["reason"] == "start" for q in rural["runs"]["on"]["pages"]["nurse"]["quality_steps"]
    )
    assert rural["runs"]["off"]["pages"]["nurse"]["quality_steps"] == []
    assert {"python", "aiortc", "chromium"} <= set(report["versions"])
    assert "media/adaptation.py" in report["code"]
