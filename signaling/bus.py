"""Signalling between nodes, through the store.

A room's media lives on one node, but a browser's websocket may land on any node.  The node
that holds the socket (the *edge*) opens a *link* to the node that holds the room and forwards
the room's messages over it; the room's node runs an ordinary :class:`~signaling.session.Session`
for that seat whose transport is the link (:class:`LinkTransport`), and its replies and pushes
come back the same way.  Media does not pass here: the SDP answer names the room node's own
addresses, so the browser sends its media straight there.

Each node reads one stream of its own, ``nodes:{setu}:inbox:<node id>``, and the others append
*envelopes* to it (``XADD``): streams keep an envelope that arrives while the reader is between
two reads, and work the same on a single Redis and a Cluster.  Envelopes:

=========  ==================  ==========================================================
``open``   edge -> room node   a new link: the user and the client's address
``in``     edge -> room node   one client message, already validated by the edge
``out``    room node -> edge   one server message for the client
``close``  either way          the link has ended, with a websocket close code
``alive``  either way          the sender is alive (one per peer node per second)
=========  ==================  ==========================================================

A node that hears nothing from a peer it has links with for :data:`PEER_TIMEOUT_S` takes it
for dead and ends those links: the room's node lets the seat's grace period run, and the edge
tells the browser to reconnect, which finds the room where it is now (placed again if its node
died).  Inboxes are made by their reader and are never re-created by a sender (``NOMKSTREAM``),
so a dead node's inbox expires instead of growing.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Callable
from typing import Any

from core.store import UNAVAILABLE, Redis, StoreUnavailable
from core.tasks import TaskOwner

logger = logging.getLogger(__name__)

INBOX_PREFIX = "nodes:{setu}:inbox:"
#: Envelopes kept in an inbox (approximately): the reader is never this far behind.
INBOX_MAXLEN = 10_000
#: An inbox whose reader is gone expires after this long.
INBOX_TTL_S = 60.0
#: How long one XREAD waits: below the store client's socket timeout, so that a quiet inbox
#: is not taken for an outage, and short enough that closing is quick.
READ_BLOCK_MS = 1000
ALIVE_S = 1.0
#: As long as a node's record lives after its last heartbeat (:data:`core.nodes.NODE_TTL_S`).
PEER_TIMEOUT_S = 3.5
#: Client messages waiting for the room node's session; more means it is stuck.
INCOMING_MAX = 256

#: Close codes carried by ``close`` envelopes, besides the websocket ones the session uses.
CLOSE_NORMAL = 1000
#: The other node is gone (silent, or it knows nothing of the link): reconnect.
CLOSE_LOST = 4010


def inbox_key(node_id: str) -> str:
    return INBOX_PREFIX + node_id


class Link:
    """The edge's end of a link to the node that holds a room."""

    def __init__(
        self,
        bus: NodeBus,
        node: str,
        on_text: Callable[[str], None],
        on_closed: Callable[[Link, int], None],
    ) -> None:
        self.id = secrets.token_hex(8)
        self.node = node
        self._bus = bus
        self._on_text = on_text
        self._on_closed = on_closed
        self.closed = False

    async def open(self, user_id: str, remote: str | None) -> None:
        await self._bus.send(
            self.node, {"k": "open", "link": self.id, "user": user_id, "remote": remote or ""}
        )

    async def forward(self, text: str) -> None:
        """Send one client message to the room's node; :class:`StoreUnavailable` if it cannot."""
        if self.closed:
            raise StoreUnavailable("the link to the consultation's server has ended")
        await self._bus.send(self.node, {"k": "in", "link": self.id, "text": text})

    async def close(self) -> None:
        """The client has gone or left the room: tell the room's node (best effort)."""
        if self.closed:
            return
        self.closed = True
        self._bus._forget_link(self)
        with contextlib.suppress(StoreUnavailable):
            await self._bus.send(
                self.node, {"k": "close", "link": self.id, "code": str(CLOSE_NORMAL)}
            )

    def _deliver(self, text: str) -> None:
        if not self.closed:
            self._on_text(text)

    def _ended(self, code: int) -> None:
        if self.closed:
            return
        self.closed = True
        self._bus._forget_link(self)
        self._on_closed(self, code)


class LinkTransport:
    """The room node's end of a link: a :class:`~signaling.transport.Transport` for the session
    that seats the user there."""

    one_room = True

    def __init__(self, bus: NodeBus, edge: str, link_id: str, user_id: str, remote: str) -> None:
        self.edge = edge
        self.id = link_id
        self.user_id = user_id
        self.remote = remote or None
        self._bus = bus
        self._incoming: collections.deque[str] = collections.deque()
        self._wake = asyncio.Event()
        self._ended = False
        self.closed = False

    async def frames(self) -> AsyncIterator[str | bytes]:
        while True:
            while self._incoming:
                yield self._incoming.popleft()
            if self._ended:
                return
            self._wake.clear()
            await self._wake.wait()

    async def send(self, text: str) -> None:
        if self.closed:
            raise ConnectionError("the link has ended")
        try:
            await self._bus.send(self.edge, {"k": "out", "link": self.id, "text": text})
        except StoreUnavailable as exc:
            raise ConnectionError(str(exc)) from exc

    async def close(self, code: int, message: bytes) -> None:
        if self.closed:
            return
        self.closed = True
        self._end()
        self._bus._forget_transport(self)
        with contextlib.suppress(StoreUnavailable):
            await self._bus.send(self.edge, {"k": "close", "link": self.id, "code": str(code)})

    def finish(self) -> None:
        """Read no more: :meth:`frames` ends after what has arrived."""
        self._end()

    def _deliver(self, text: str) -> None:
        if self._ended:
            return
        if len(self._incoming) >= INCOMING_MAX:
            logger.warning(
                "link %s from %s: %d messages waiting, ending it", self.id, self.edge, INCOMING_MAX
            )
            self._end()
            return
        self._incoming.append(text)
        self._wake.set()

    def _end(self) -> None:
        """No more frames: the edge closed the link, or it is gone."""
        self._ended = True
        self._wake.set()

    def _lost(self) -> None:
        self.closed = True
        self._bus._forget_transport(self)
        self._end()


class NodeBus:
    """This node's inbox and its links to and from the other nodes.

    ``accept`` is called with each link another node opens to this one; it runs a session on
    the transport (and owns that session's task).  :meth:`start` makes the inbox and starts
    reading it; :meth:`close` (idempotent) stops, and ends every link.
    """

    def __init__(
        self,
        store: Redis,
        node_id: str,
        accept: Callable[[LinkTransport], None],
        *,
        peer_timeout_s: float = PEER_TIMEOUT_S,
        alive_s: float = ALIVE_S,
    ) -> None:
        self.node_id = node_id
        self._store = store
        self._accept = accept
        self._peer_timeout_s = peer_timeout_s
        self._alive_s = alive_s
        self._inbox = inbox_key(node_id)
        self._links: dict[str, Link] = {}
        self._transports: dict[str, LinkTransport] = {}
        #: When each peer node was last heard from (loop time).
        self._heard: dict[str, float] = {}
        self._tasks = TaskOwner(f"bus {node_id}")
        self._stopping = asyncio.Event()
        self._reader: asyncio.Task[Any] | None = None
        #: Whether the last read of the inbox worked: while it does not, silence proves nothing.
        self._store_ok = True
        self._closed = False

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        with contextlib.suppress(StoreUnavailable):
            await self._keep_inbox()
        self._reader = self._tasks.spawn(self._read(), name="inbox")
        self._tasks.spawn(self._tick(), name="alive")

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._stopping.set()
        # Cancelling redis-py inside a blocking read can leave the task waiting for good; ask
        # the reader to stop between reads instead.
        if self._reader is not None:
            await asyncio.wait({self._reader}, timeout=READ_BLOCK_MS / 1000 + 3)
        await self._tasks.close()
        for link in list(self._links.values()):
            link._ended(CLOSE_LOST)
        for transport in list(self._transports.values()):
            transport._lost()

    def __len__(self) -> int:
        """Links open through this node, either way."""
        return len(self._links) + len(self._transports)

    # ------------------------------------------------------------------ links

    def connect(
        self, node: str, on_text: Callable[[str], None], on_closed: Callable[[Link, int], None]
    ) -> Link:
        """A new link to ``node`` (not yet opened: see :meth:`Link.open`)."""
        link = Link(self, node, on_text, on_closed)
        self._watch(node)
        self._links[link.id] = link
        return link

    def _watch(self, node: str) -> None:
        # A peer with no link yet gets a whole timeout from now, however long ago it spoke.
        if not any(link.node == node for link in self._links.values()) and not any(
            t.edge == node for t in self._transports.values()
        ):
            self._heard[node] = asyncio.get_running_loop().time()

    def _forget_link(self, link: Link) -> None:
        self._links.pop(link.id, None)

    def _forget_transport(self, transport: LinkTransport) -> None:
        self._transports.pop(transport.id, None)

    async def send(self, node: str, fields: dict[str, str]) -> None:
        """Append an envelope to ``node``'s inbox; :class:`StoreUnavailable` if the store
        cannot be reached.  An envelope for a node whose inbox is gone is dropped: the links
        to it end at the next timeout check."""
        fields["from"] = self.node_id
        try:
            await self._store.xadd(
                inbox_key(node),
                fields,  # type: ignore[arg-type]
                maxlen=INBOX_MAXLEN,
                approximate=True,
                nomkstream=True,
            )
        except UNAVAILABLE as exc:
            raise StoreUnavailable(str(exc)) from exc

    # ------------------------------------------------------------------ the inbox

    async def _keep_inbox(self) -> None:
        """Make this node's inbox if it is missing (first start, a store that restarted empty)
        and push its expiry back."""
        try:
            if not await self._store.pexpire(self._inbox, int(INBOX_TTL_S * 1000)):
                async with self._store.pipeline(transaction=False) as pipe:
                    pipe.xadd(
                        self._inbox, {"k": "hello", "from": self.node_id}, maxlen=INBOX_MAXLEN
                    )
                    pipe.pexpire(self._inbox, int(INBOX_TTL_S * 1000))
                    await pipe.execute()
        except UNAVAILABLE as exc:
            raise StoreUnavailable(str(exc)) from exc

    async def _read(self) -> None:
        last: str | None = None
        backoff = 0.2
        while not self._stopping.is_set():
            try:
                if last is None:
                    newest = await self._store.xrevrange(self._inbox, count=1)
                    last = str(newest[0][0]) if newest else "0-0"
                batch: Any = await self._store.xread(
                    {self._inbox: last}, block=READ_BLOCK_MS, count=500
                )
                if not self._store_ok:
                    logger.info("bus %s: store reachable again", self.node_id)
                    self._store_ok = True
                backoff = 0.2
            except asyncio.CancelledError:
                raise
            except UNAVAILABLE as exc:
                if self._store_ok:
                    logger.warning("bus %s: store unavailable (%s); retrying", self.node_id, exc)
                self._store_ok = False
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            for _stream, entries in batch or []:
                for entry_id, fields in entries:
                    last = entry_id
                    try:
                        self._dispatch(fields)
                    except Exception:
                        logger.exception("bus %s: bad envelope %r", self.node_id, fields)

    def _dispatch(self, fields: dict[str, str]) -> None:
        kind, sender, link_id = fields.get("k"), fields.get("from", ""), fields.get("link", "")
        if sender:
            self._heard[sender] = asyncio.get_running_loop().time()
        if kind in ("alive", "hello"):
            return
        if kind == "open":
            transport = LinkTransport(
                self, sender, link_id, fields.get("user", ""), fields.get("remote", "")
            )
            self._transports[link_id] = transport
            self._accept(transport)
            return
        if kind == "in":
            if (known := self._transports.get(link_id)) is not None:
                known._deliver(fields.get("text", ""))
            else:
                # This node does not know the link (it restarted): the edge should start again.
                self._tasks.spawn(self._refuse(sender, link_id), name="refuse")
            return
        if kind == "out":
            link = self._links.get(link_id)
            if link is not None:
                link._deliver(fields.get("text", ""))
            else:
                self._tasks.spawn(self._refuse(sender, link_id), name="refuse")
            return
        if kind == "close":
            code = int(fields.get("code", CLOSE_NORMAL))
            if (link := self._links.get(link_id)) is not None:
                link._ended(code)
            elif (ended := self._transports.pop(link_id, None)) is not None:
                ended.closed = True
                ended._end()
            return
        logger.warning("bus %s: unknown envelope %r from %s", self.node_id, kind, sender)

    async def _refuse(self, node: str, link_id: str) -> None:
        with contextlib.suppress(StoreUnavailable):
            await self.send(node, {"k": "close", "link": link_id, "code": str(CLOSE_LOST)})

    # ------------------------------------------------------------------ liveness

    def _peers(self) -> set[str]:
        return {link.node for link in self._links.values()} | {
            t.edge for t in self._transports.values()
        }

    async def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self._alive_s)
            peers = self._peers()
            results = await asyncio.gather(
                self._keep_inbox(),
                *(self.send(peer, {"k": "alive"}) for peer in peers),
                return_exceptions=True,
            )
            for result in results:
                if isinstance(result, BaseException) and not isinstance(result, StoreUnavailable):
                    logger.error("bus %s: %r", self.node_id, result)
            now = loop.time()
            if not self._store_ok:
                # Nobody can be heard through a store that is down: that is no one's death.
                self._heard.update(dict.fromkeys(peers, now))
                continue
            for peer in peers:
                if now - self._heard.get(peer, now) > self._peer_timeout_s:
                    self._lost(peer)

    def _lost(self, peer: str) -> None:
        logger.warning(
            "bus %s: nothing from node %s for %.1fs; ending its links",
            self.node_id,
            peer,
            self._peer_timeout_s,
        )
        for link in [link for link in self._links.values() if link.node == peer]:
            link._ended(CLOSE_LOST)
        for transport in [t for t in self._transports.values() if t.edge == peer]:
            transport._lost()
