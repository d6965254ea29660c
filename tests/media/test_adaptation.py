"""The adaptation ladder: steps down at once, up only after a healthy hold, never flaps."""

from __future__ import annotations

from media.adaptation import (
    AUDIO_ONLY,
    LADDER,
    LOW_BANDWIDTH_STEP,
    START_STEP,
    Adapter,
    Grade,
    LegSample,
    OneWayDelay,
    collapsed,
    step_for_bandwidth,
    worst,
)

CLEAN = LegSample(loss=0.0, rtt_ms=80, available_kbps=2000)


def feed(adapter: Adapter, sample: LegSample, start: float, seconds: float) -> float:
    """One report every 2 s, like the pages send; returns the time after the last."""
    t = start
    while t < start + seconds:
        adapter.update(sample, t)
        t += 2.0
    return t


def test_ladder_goes_from_full_video_to_audio_only() -> None:
    assert [s.index for s in LADDER] == list(range(len(LADDER)))
    assert LADDER[0].label == "640x360 15 fps"
    assert LADDER[-1].video is False
    rates = [s.max_bitrate_kbps for s in LADDER]
    assert rates == sorted(rates, reverse=True)


def test_loss_steps_down_to_what_the_link_carried() -> None:
    a = Adapter(now=0.0)
    change = a.update(LegSample(loss=0.12, rtt_ms=150), 2.0)
    assert change is not None
    assert change.step.index == START_STEP + 1
    assert change.reason == "loss"
    # Not again within the spacing: the queue drains and the next report must show the new rate.
    assert a.update(LegSample(loss=0.12, rtt_ms=150), 4.0) is None
    # Losing 15 % of step 2: what got through fits step 3, with its smaller audio.
    lower = a.update(LegSample(loss=0.15, rtt_ms=150), 6.5)
    assert lower is not None
    assert lower.step.index == 3


def test_a_poor_link_keeps_video_and_an_edge_link_keeps_audio() -> None:
    """Step 1 (about 310 kbit/s on the wire) onto a 150 kbit/s and a 60 kbit/s link."""
    poor = Adapter(now=0.0)
    change = poor.update(LegSample(loss=1 - 150 / LADDER[1].wire_kbps, rtt_ms=300), 2.0)
    assert change is not None
    assert change.step.video
    assert change.step.wire_kbps <= 150
    edge = Adapter(now=0.0)
    change = edge.update(LegSample(loss=1 - 60 / LADDER[1].wire_kbps, rtt_ms=400), 2.0)
    assert change is not None
    assert change.step.index == AUDIO_ONLY, "video pauses at the first report"
    assert change.step.wire_kbps <= 60


def test_a_building_queue_steps_down() -> None:
    a = Adapter(now=0.0)
    a.update(LegSample(loss=0.0, rtt_ms=150), 2.0)
    change = a.update(LegSample(loss=0.0, rtt_ms=520), 4.0)
    assert change is not None
    assert change.reason == "delay"


def test_the_browsers_own_estimate_never_drags_a_step_down() -> None:
    """A capped sender's bandwidth estimate sits near its cap: it is no sign of congestion."""
    a = Adapter(now=0.0, start=3)
    t = feed(a, LegSample(loss=0.0, rtt_ms=100, available_kbps=70), 2.0, 30.0)
    assert a.step.index < 3, "clean links climb whatever the capped estimate says"
    assert all(reason != "bandwidth" for _, _, reason in a.history)
    assert t > 30.0


def test_random_loss_a_rural_link_always_has_is_not_congestion() -> None:
    a = Adapter(now=0.0, start=2)
    feed(a, LegSample(loss=0.05, rtt_ms=300), 2.0, 40.0)
    assert a.step.index <= 2, "5 % loss alone neither drags the step down nor blocks recovery"


def test_recovers_one_rung_at_a_time_after_a_healthy_hold() -> None:
    a = Adapter(now=0.0, start=AUDIO_ONLY)
    t = feed(a, CLEAN, 2.0, 6.0)
    assert a.step.index == AUDIO_ONLY, "no climb before the hold"
    t = feed(a, CLEAN, t, 60.0)
    assert a.step.index == 0
    ups = [reason for _, _, reason in a.history if reason == "recovered"]
    assert len(ups) == AUDIO_ONLY


def test_an_up_that_fails_doubles_the_wait() -> None:
    a = Adapter(now=0.0, start=2)
    t = feed(a, CLEAN, 2.0, 12.0)
    assert a.step.index == 1
    first_up = a.history[-1][0]
    a.update(LegSample(loss=0.2, rtt_ms=100), t)  # the link could not carry it
    assert a.step.index == 2
    down_at = t
    t = feed(a, CLEAN, t + 2.0, 14.0)
    assert a.step.index == 2, "the next try waits twice as long"
    t = feed(a, CLEAN, t, 20.0)
    assert a.step.index <= 1
    retry = next(when for when, idx, why in a.history if why == "recovered" and when > down_at)
    assert retry - down_at >= 16.0
    assert first_up < down_at


def test_low_bandwidth_switch_is_a_floor() -> None:
    a = Adapter(now=0.0, start=0)
    change = a.set_low_bandwidth(True, 1.0)
    assert change is not None
    assert change.step.index == LOW_BANDWIDTH_STEP
    feed(a, CLEAN, 2.0, 60.0)
    assert a.step.index == LOW_BANDWIDTH_STEP, "never above the floor while on"
    a.set_low_bandwidth(False, 62.0)
    feed(a, CLEAN, 64.0, 40.0)
    assert a.step.index < LOW_BANDWIDTH_STEP


def test_worst_of_two_legs_and_grades() -> None:
    up = LegSample(loss=0.01, rtt_ms=200, available_kbps=400)
    down = LegSample(loss=0.06, rtt_ms=150, kbps=120)
    both = worst(up, down)
    assert both.loss == 0.06
    assert both.rtt_ms == 200
    assert both.available_kbps == 400
    assert both.kbps == 120
    assert LegSample().grade() is Grade.UNKNOWN
    assert LegSample(loss=0.0, rtt_ms=100).grade() is Grade.GOOD
    assert LegSample(loss=0.03, rtt_ms=350).grade() is Grade.FAIR
    assert LegSample(loss=0.10, rtt_ms=350).grade() is Grade.POOR
    assert LegSample(loss=0.30, rtt_ms=350).grade() is Grade.BAD


def test_pre_call_measurement_picks_the_starting_rung() -> None:
    assert step_for_bandwidth(2000) == 0
    assert step_for_bandwidth(400) == 1
    assert step_for_bandwidth(300) == 2
    assert step_for_bandwidth(210) == 2
    # Audio as RED costs twice its Opus rate: 320x180 at 10 fps no longer fits in 200.
    assert step_for_bandwidth(200) == 3
    assert step_for_bandwidth(150) == 3
    assert step_for_bandwidth(60) == AUDIO_ONLY


def test_a_longer_path_is_not_taken_for_a_queue_for_ever() -> None:
    """A call moves from a 40 ms path to a 320 ms one (a rural link): the jump looks like a
    queue at first and video steps down, but once the new length is the lowest round trip of
    the recent past, a loss-free link lets video come back."""
    a = Adapter(now=0.0)
    t = feed(a, LegSample(loss=0.0, rtt_ms=40), 0.0, 10.0)
    change = a.update(LegSample(loss=0.0, rtt_ms=400), t)
    assert change is not None
    assert change.reason == "delay"
    down = a.step.index
    feed(a, LegSample(loss=0.0, rtt_ms=320), t + 2.0, 40.0)
    assert a.step.index < down


def test_severe_loss_right_after_a_step_for_delay_is_not_kept_waiting() -> None:
    """A link falls to 60 kbit/s: the first report shows only the round trip growing (one rung
    down, a guess), the next the loss; the sender pauses video then, not a spacing later."""
    a = Adapter(now=0.0)
    t = feed(a, LegSample(loss=0.0, rtt_ms=40), 0.0, 10.0)
    first = a.update(LegSample(loss=0.02, rtt_ms=450), t)
    assert first is not None
    assert first.reason == "delay"
    second = a.update(LegSample(loss=0.7, rtt_ms=600), t + 2.0)
    assert second is not None
    assert second.step.index == AUDIO_ONLY
    # Moderate loss after a step for loss waits for the spacing; severe loss, once the step
    # has settled, does not.
    b = Adapter(now=0.0)
    assert b.update(LegSample(loss=0.3, rtt_ms=80), 2.0) is not None
    assert b.update(LegSample(loss=0.15, rtt_ms=80), 4.0) is None
    assert b.update(LegSample(loss=0.3, rtt_ms=80), 5.0) is not None


def arrivals(delay: OneWayDelay, start_s: float, seconds: float, extra_s: float = 0.0) -> float:
    """Audio packets every 20 ms from ``start_s`` (media time), each ``extra_s`` late; the
    sender's clock is far from ours and its timestamps wrap on the way."""
    t = start_s
    while t < start_s + seconds:
        timestamp = (int(t * 48_000) + (1 << 32) - 48_000) % (1 << 32)
        delay.packet(1000.0 + t + 0.05 + extra_s, timestamp)
        t += 0.02
    return t


def test_one_way_delay_sees_a_standing_queue_not_a_burst() -> None:
    delay = OneWayDelay(48_000)
    assert delay.queue_ms(1000.0) is None
    t = arrivals(delay, 0.0, 3.0)
    assert delay.queue_ms(1000.0 + t) == 0.0
    # A keyframe's burst: a few packets 150 ms late, then the queue drains.
    t = arrivals(delay, t, 0.1, extra_s=0.15)
    t = arrivals(delay, t, 1.5)
    assert delay.queue_ms(1000.0 + t) == 0.0
    # A sender above the link's rate: the queue stays near 200 ms.
    t = arrivals(delay, t, 2.0, extra_s=0.2)
    assert 190 <= (delay.queue_ms(1000.0 + t) or 0) <= 210
    # Nothing arrives: nothing to say.
    assert delay.queue_ms(1000.0 + t + 2.0) is None


def test_a_queue_on_the_other_direction_is_not_the_senders() -> None:
    # The round trip grows by 400 ms, but the sender's own direction has no queue: no step.
    adapter = Adapter(0.0, start=1)
    t = feed(adapter, LegSample(loss=0.0, rtt_ms=300, queue_ms=0.0), 0.0, 10)
    feed(adapter, LegSample(loss=0.0, rtt_ms=700, queue_ms=10.0), t, 10)
    assert [reason for _, _, reason in adapter.history] == ["start", "recovered"]
    # Its own direction's standing queue steps it down.
    change = adapter.update(LegSample(loss=0.0, rtt_ms=700, queue_ms=180.0), t + 20)
    assert change is not None
    assert (change.reason, change.step.index) == ("delay", 1)


def test_a_collapsed_link_steps_again_without_the_spacing() -> None:
    adapter = Adapter(0.0, start=1)
    first = adapter.update(LegSample(loss=0.45, rtt_ms=400), 2.0)
    assert first is not None
    assert first.step.index == 2
    # A second later a quarter is still lost, in a report that still counts the old rate:
    # the spacing holds...
    held = Adapter(0.0, start=1)
    held.update(LegSample(loss=0.45, rtt_ms=400), 2.0)
    assert held.update(LegSample(loss=0.3, rtt_ms=400), 3.0) is None
    # ...until the step has settled: then the step did not fit, and it goes on.
    settled = held.update(LegSample(loss=0.3, rtt_ms=400), 4.0)
    assert settled is not None
    assert settled.step.index > 2
    # ...but half lost says the link carries a fraction of it: on at once.
    again = adapter.update(LegSample(loss=0.6, rtt_ms=400), 4.0)
    assert again is not None
    assert again.step.index == AUDIO_ONLY


def test_severe_loss_just_after_a_step_for_delay_is_the_old_rate_s() -> None:
    adapter = Adapter(0.0, start=1)
    for t in (1.0, 2.0, 3.0):
        adapter.update(LegSample(loss=0.0, rtt_ms=300, queue_ms=0.0), t)
    delay = adapter.update(LegSample(loss=0.0, rtt_ms=700, queue_ms=200.0), 4.0)
    assert delay is not None
    assert (delay.reason, delay.step.index) == ("delay", 2)
    # A second later the report still counts the packets sent at the old rate: no step...
    assert adapter.update(LegSample(loss=0.4, rtt_ms=700, queue_ms=0.0), 5.0) is None
    # ...two seconds on, the loss is the new rate's, and it goes down at once.
    change = adapter.update(LegSample(loss=0.4, rtt_ms=700, queue_ms=0.0), 6.0)
    assert change is not None
    assert change.reason == "loss"


def test_a_full_link_goes_to_the_step_that_fits_what_it_carried() -> None:
    # A standing queue on a link that carried 55 kbit/s: straight to audio only.
    edge = Adapter(0.0, start=1)
    change = edge.update(LegSample(loss=0.0, queue_ms=300.0, carried_kbps=55.0), 2.0)
    assert change is not None
    assert (change.reason, change.step.index) == ("delay", AUDIO_ONLY)
    # Without the count, one rung.
    unknown = Adapter(0.0, start=1)
    change = unknown.update(LegSample(loss=0.0, queue_ms=300.0), 2.0)
    assert change is not None
    assert change.step.index == 2


def test_loss_stops_video_only_from_its_last_rung_unless_the_link_collapsed() -> None:
    adapter = Adapter(0.0, start=2)
    change = adapter.update(LegSample(loss=0.4, rtt_ms=300, carried_kbps=140.0), 5.0)
    assert change is not None
    assert change.step.index == AUDIO_ONLY - 1
    collapsed = Adapter(0.0, start=2)
    change = collapsed.update(LegSample(loss=0.6, rtt_ms=300, carried_kbps=50.0), 5.0)
    assert change is not None
    assert change.step.index == AUDIO_ONLY


def test_severe_loss_on_a_link_counted_to_carry_little_pauses_video_at_once() -> None:
    # An edge link (60 kbit/s) under the second rung's 300 kbit/s: a third lost, 60 carried.
    # What was sent less what was lost (200) would fit a video rung; what arrived does not.
    edge = Adapter(0.0, start=1)
    change = edge.update(LegSample(loss=0.35, rtt_ms=600, carried_kbps=60.0), 2.0)
    assert change is not None
    assert (change.reason, change.step.index) == ("loss", AUDIO_ONLY)
    assert collapsed(LegSample(loss=0.35, carried_kbps=60.0))
    # A poor link (150 kbit/s) overloaded alike carries more: the rung that fits, with video.
    poor = Adapter(0.0, start=1)
    change = poor.update(LegSample(loss=0.35, rtt_ms=600, carried_kbps=140.0), 2.0)
    assert change is not None
    assert change.step.index == AUDIO_ONLY - 1
    assert not collapsed(LegSample(loss=0.35, carried_kbps=140.0))
    # ...and what it carried full caps the rungs tried above it: not 320x180 10 fps (172
    # kbit/s on the wire) for a while, whatever the healthy reports.
    t = feed(poor, LegSample(loss=0.02, queue_ms=5.0), 4.0, 40.0)
    assert poor.step.index == AUDIO_ONLY - 1
    feed(poor, LegSample(loss=0.02, queue_ms=5.0), t, 30.0)
    assert poor.step.index < AUDIO_ONLY - 1
    # Without a count, a third lost is no collapse; half is.
    assert not collapsed(LegSample(loss=0.35))
    assert collapsed(LegSample(loss=0.5))


def test_a_link_seen_full_is_not_asked_for_more_for_a_while() -> None:
    adapter = Adapter(0.0, start=1)
    change = adapter.update(LegSample(loss=0.0, queue_ms=300.0, carried_kbps=55.0), 2.0)
    assert change is not None
    assert change.step.index == AUDIO_ONLY
    # Healthy on audio only for long after: video (116 kbit/s at the least) is not tried...
    t = feed(adapter, LegSample(loss=0.01, queue_ms=5.0), 4.0, 40.0)
    assert adapter.step.index == AUDIO_ONLY
    # ...until the link's figure is 45 s old.
    feed(adapter, LegSample(loss=0.01, queue_ms=5.0), t, 30.0)
    assert adapter.step.index < AUDIO_ONLY


def test_loss_on_a_link_with_room_sets_no_ceiling() -> None:
    # Half lost in a burst, but the queue was not full (so no rate it can carry is known):
    # video may come back.
    adapter = Adapter(0.0, start=3)
    change = adapter.update(LegSample(loss=0.6, queue_ms=10.0), 5.0)
    assert change is not None
    assert change.step.index == AUDIO_ONLY
    feed(adapter, LegSample(loss=0.01, queue_ms=5.0), 7.0, 30.0)
    assert adapter.step.index < AUDIO_ONLY


def test_a_sample_describes_what_was_measured() -> None:
    assert LegSample().describe() == "nothing measured"
    sample = LegSample(loss=0.4213, rtt_ms=640.4, carried_kbps=57.2)
    assert sample.describe() == "loss 0.42, rtt 640 ms, carried 57 kbit/s"


def test_the_last_video_rung_holds_on_moderate_loss() -> None:
    # A poor link loses a tenth as video comes back on its last rung: video stays.
    adapter = Adapter(0.0, start=AUDIO_ONLY - 1)
    assert feed(adapter, LegSample(loss=0.12, rtt_ms=300, queue_ms=0.0), 0.0, 20.0)
    assert adapter.step.index == AUDIO_ONLY - 1
    # Severe loss there still stops it.
    change = adapter.update(LegSample(loss=0.3, rtt_ms=300, queue_ms=0.0), 22.0)
    assert change is not None
    assert change.step.index == AUDIO_ONLY


def test_the_last_video_rung_holds_on_a_queue_whose_rate_is_unknown() -> None:
    adapter = Adapter(0.0, start=AUDIO_ONLY - 1)
    assert adapter.update(LegSample(loss=0.02, rtt_ms=500, queue_ms=200.0), 5.0) is None
    # With what the full link carried, the step that fits.
    change = adapter.update(LegSample(loss=0.02, queue_ms=200.0, carried_kbps=50.0), 10.0)
    assert change is not None
    assert (change.reason, change.step.index) == ("delay", AUDIO_ONLY)


def test_far_loss_alone_is_no_collapse() -> None:
    """Half lost on the other seat's downlink, with no rate known: not a collapse (the reports'
    span differs from the rate's); on the sender's own link it is."""
    assert not collapsed(LegSample(loss=0.6, far=True))
    assert collapsed(LegSample(loss=0.6))
    assert collapsed(LegSample(loss=0.6, far=True, carried_kbps=50.0))
    adapter = Adapter(0.0, start=2)
    change = adapter.update(LegSample(loss=0.55, rtt_ms=500, far=True), 5.0)
    assert change is not None
    assert change.step.index == AUDIO_ONLY - 1
    # Its reports come late: severe far loss two seconds on waits for the spacing.
    assert adapter.update(LegSample(loss=0.5, rtt_ms=500, far=True), 7.0) is None
    change = adapter.update(LegSample(loss=0.5, rtt_ms=500, far=True), 9.0)
    assert change is not None
    assert change.step.index == AUDIO_ONLY


def test_loss_on_a_full_link_that_carries_the_step_waits() -> None:
    """Two seconds after a step to 320x180 8 fps (116 kbit/s), a poor link that carried 144
    full still loses a third: the old rate, still queued or sent; the step fits, so it stays."""
    adapter = Adapter(0.0, start=AUDIO_ONLY - 1)
    assert adapter.update(LegSample(loss=0.3, rtt_ms=300, carried_kbps=144.0), 5.0) is None
    # Nor does a standing queue move it.
    assert adapter.update(LegSample(loss=0.0, queue_ms=250.0, carried_kbps=144.0), 10.0) is None
    assert adapter.step.index == AUDIO_ONLY - 1


def test_no_rung_is_tried_above_what_the_path_carried() -> None:
    """The doctor's video crosses the spoke's link the other way: no rung up that the spoke's
    full uplink (the path's figure) could not carry, however healthy the reports."""
    adapter = Adapter(0.0, start=1)
    feed(adapter, LegSample(loss=0.0, rtt_ms=80, carried_kbps=146.0), 0.0, 40.0)
    assert adapter.step.index == 1
    feed(adapter, CLEAN, 40.0, 20.0)
    assert adapter.step.index == 0


def test_a_sender_fits_the_rate_its_path_was_seen_to_carry() -> None:
    adapter = Adapter(0.0, start=1)
    change = adapter.fit(5.0, 145.0)
    assert change is not None
    assert (change.reason, change.step.index) == ("loss", AUDIO_ONLY - 1)
    assert adapter.fit(6.0, 145.0) is None  # already fits
    assert adapter.ceiling_kbps(6.0) == 145.0
    # Video stops by the brake only, not by a fit.
    low = Adapter(0.0, start=1)
    change = low.fit(5.0, 40.0)
    assert change is not None
    assert change.step.index == AUDIO_ONLY - 1
