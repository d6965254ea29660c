"""Where a room lives: placing new rooms on the least-loaded node, and finding (or moving) the
node of an existing one."""

from __future__ import annotations

import contextlib
import logging

from core.domain import RoomId, room_hub
from core.nodes import NodeRegistry
from core.store import StoreUnavailable
from rooms import RoomClosed, RoomNotFound, RoomRegistry, WaitingRoom

logger = logging.getLogger(__name__)


class Router:
    """Placement of rooms on nodes, as this node sees it."""

    def __init__(self, nodes: NodeRegistry, waiting_room: WaitingRoom, rooms: RoomRegistry) -> None:
        self.node_id = nodes.id
        self._nodes = nodes
        self._waiting_room = waiting_room
        self._rooms = rooms

    async def place(self, exclude: str | None = None) -> str:
        """The node for a new room: the least-loaded live one that takes new rooms (this one
        when the registry cannot say).  Raises :class:`StoreUnavailable`."""
        live = [n for n in await self._nodes.live_nodes() if not n.draining and n.id != exclude]
        node = min(live, key=lambda n: n.load_order()).id if live else self.node_id
        if node != self.node_id:
            # Best effort: only spreads rooms placed between two heartbeats.
            with contextlib.suppress(StoreUnavailable):
                await self._nodes.count_placed(node)
        return node

    async def locate(self, room_id: str, avoid: str | None = None) -> str:
        """The node that holds (or is to hold) room ``room_id``.

        A room whose node has died, or is ``avoid`` (a draining node that refused to open it),
        is placed again first.  Raises :class:`RoomNotFound`, :class:`RoomClosed` or
        :class:`StoreUnavailable`.
        """
        try:
            hub = room_hub(room_id)
        except ValueError:
            raise RoomNotFound("no such consultation") from None
        rid = RoomId(room_id)
        if self._rooms.get(rid) is not None:
            return self.node_id
        record = await self._waiting_room.room(hub, rid)
        if record is None:
            raise RoomNotFound("no such consultation")
        if record["state"] == "ended":
            raise RoomClosed("this consultation has ended")
        placed = record.get("node", "")
        if (
            placed
            and placed != avoid
            and (placed == self.node_id or await self._nodes.is_live(placed))
        ):
            return placed
        target = await self.place(exclude=avoid)
        moved = await self._waiting_room.move_room(hub, rid, placed, target)
        if moved is None:
            raise RoomNotFound("no such consultation")
        if moved == "ended":
            raise RoomClosed("this consultation has ended")
        return moved
