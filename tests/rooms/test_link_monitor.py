"""The room's link monitor, apart from media: what it decides from its adapters' figures."""

from __future__ import annotations

from typing import cast

from core.domain import Participant
from media import MediaRoom
from rooms.quality import LinkMonitor


def test_red_stays_on_audio_only_where_the_link_was_seen_to_carry_it() -> None:
    now = [100.0]
    monitor = LinkMonitor(
        cast(MediaRoom, None),  # not sampled here
        on_step=lambda seat, change: None,
        on_network=lambda: None,
        clock=lambda: now[0],
    )
    # Nothing seen of the link's rate: one copy of each frame.
    assert not monitor._red_fits()
    # An edge link that carried 60 kbit/s full: RED audio (40 on the wire) fits with room.
    monitor.adapters[Participant.SPOKE].brake(now[0], "loss", carried_kbps=60.0)
    assert monitor._red_fits()
    # The weaker figure counts: 42 kbit/s leaves no margin.
    monitor.adapters[Participant.HUB].brake(now[0], "loss", carried_kbps=42.0)
    assert not monitor._red_fits()
    # Figures older than the ceiling's 45 s say nothing.
    now[0] += 46.0
    assert not monitor._red_fits()
    assert monitor.adapters[Participant.SPOKE].ceiling_kbps(now[0]) is None
