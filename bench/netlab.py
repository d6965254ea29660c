"""Emulated weak links: a spoke behind a slow, lossy, distant link to the server.

This kernel has no ``netem``, so delay cannot come from the kernel. A :class:`WeakLink` builds::

    root namespace                middle namespace                        spoke namespace
    server, doctors               (forwards through the TUN)              Chromium, clients
    10.231.N.1 ──veth── 10.231.N.2  [TUN ⇄ bench.netstage]  10.231.N.5 ──veth── 10.231.N.6

Policy routing in the middle namespace sends every packet arriving on either veth into a TUN
device; :mod:`bench.netstage` reads them there, applies the bottleneck rate, loss, delay and
jitter, and writes them back, and the kernel forwards them on by its main table (the rules
match the input interface, so written packets do not loop). Any program works unmodified on
either side: bind the server to :attr:`WeakLink.server_addr` and run the spoke's programs
with :meth:`WeakLink.netns_command`. The spoke namespace has no route beyond the server's
subnet, and the root namespace gets nothing but a route to the spoke's /30.

Everything is named ``setu-<6 hex>-...``; a claim file under ``/run/setu-netlab`` records the
owner process, so :func:`sweep_stale` removes what a killed run left behind without touching
links whose owner is alive. Needs root, ``ip`` (iproute2), ``sysctl`` (procps) and
``/dev/net/tun``. ``python -m bench.netlab hold rural`` keeps a link up for manual work;
``python -m bench.netlab sweep`` cleans up.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import copy
import dataclasses
import functools
import json
import logging
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import Any, Self, TypeVar

logger = logging.getLogger("bench.netlab")
T = TypeVar("T")

NAME_PREFIX = "setu-"
#: Link ``N`` (0-255) uses 10.231.N.0/29: the server /30 and the spoke /30.
NET_PREFIX = "10.231"
CLAIMS_DIR = Path("/run/setu-netlab")
#: The middle namespace's routing table that leads into the TUN.
TUN_TABLE = 231
STAGE_SCRIPT = Path(__file__).with_name("netstage.py")
STAGE_READY_TIMEOUT_S = 10.0
REQUEST_TIMEOUT_S = 5.0
#: The stage's SCHED_FIFO priority: low, above every ordinary process.
STAGE_RT_PRIORITY = 10
#: How long processes left in a namespace get after SIGTERM before SIGKILL.
KILL_GRACE_S = 1.0
_NAME_RE = re.compile(rf"^{re.escape(NAME_PREFIX)}([0-9a-f]{{6}})-(mid|spoke|s)$")


class NetlabError(RuntimeError):
    """A link could not be built, controlled or removed."""


class ToolMissing(NetlabError):
    """A command or device the links need is not on this machine."""


# ------------------------------------------------------------------------------ link specs


@dataclass(frozen=True)
class LinkSpec:
    """A symmetric link: ``rate_kbit`` each way (None: unlimited), ``rtt_ms`` split evenly
    between the directions, ``loss_pct`` random loss in each direction, ``jitter_ms`` uniform
    jitter added to each one-way delay, and a bottleneck queue holding ``queue_ms`` of
    backlog at the link rate (tail drop beyond it).

    ``rtt_ms`` is the propagation delay: each packet also takes its serialisation time at
    ``rate_kbit`` (whole IP packets count), as on a real link: a 1200-byte video packet takes
    32 ms at 300 kbit/s, a 88-byte ping 2.3 ms."""

    rate_kbit: int | None
    rtt_ms: float = 0
    loss_pct: float = 0
    jitter_ms: float = 0
    queue_ms: float = 200
    name: str = ""

    def __post_init__(self) -> None:
        if self.rate_kbit is not None and self.rate_kbit <= 0:
            raise ValueError(f"rate_kbit must be positive or None, not {self.rate_kbit}")
        if self.rtt_ms < 0 or self.jitter_ms < 0:
            raise ValueError("rtt_ms and jitter_ms cannot be negative")
        if not 0 <= self.loss_pct <= 100:
            raise ValueError(f"loss_pct must be within 0-100, not {self.loss_pct}")
        if self.queue_ms <= 0:
            raise ValueError(f"queue_ms must be positive, not {self.queue_ms}")

    def one_way(self) -> dict[str, Any]:
        """What each direction does, as the stage's ``set`` command takes it."""
        return {
            "rate_kbit": self.rate_kbit,
            "delay_ms": self.rtt_ms / 2,
            "jitter_ms": self.jitter_ms,
            "loss_pct": self.loss_pct,
            "queue_ms": self.queue_ms,
        }


#: The link profiles tests and benchmarks use, from a hub-grade connection to a spoke on a
#: weak mobile signal. Assumed figures, not field measurements.
SCENARIOS: Mapping[str, LinkSpec] = MappingProxyType(
    {
        "good": LinkSpec(2000, 40, 0, name="good"),
        "rural": LinkSpec(300, 150, 2, name="rural"),
        "poor": LinkSpec(150, 300, 5, name="poor"),
        "edge": LinkSpec(60, 400, 3, name="edge"),
    }
)
#: A link that does nothing: a starting point before :meth:`WeakLink.set`.
CLEAR = LinkSpec(None, name="clear")


# ------------------------------------------------------------------------------ names and addresses


@dataclass(frozen=True)
class Plan:
    """The names and addresses of one link."""

    link_id: str
    index: int

    def _name(self, suffix: str) -> str:
        return f"{NAME_PREFIX}{self.link_id}-{suffix}"

    @property
    def mid_ns(self) -> str:
        return self._name("mid")

    @property
    def spoke_ns(self) -> str:
        return self._name("spoke")

    @property
    def server_if(self) -> str:  # root namespace
        return self._name("s")

    @property
    def mid_server_if(self) -> str:
        return self._name("ms")

    @property
    def mid_spoke_if(self) -> str:
        return self._name("mp")

    @property
    def spoke_if(self) -> str:
        return self._name("p")

    @property
    def tun_if(self) -> str:
        return self._name("t")

    def addr(self, host: int) -> str:
        return f"{NET_PREFIX}.{self.index}.{host}"

    @property
    def spoke_net(self) -> str:
        return f"{self.addr(4)}/30"

    @property
    def claim_path(self) -> Path:
        return CLAIMS_DIR / f"net-{self.index}.json"


# ------------------------------------------------------------------------------ plumbing (sync)


def _run(argv: Sequence[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise NetlabError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def require_tools() -> None:
    """Raise :class:`ToolMissing` unless this process can build links."""
    if os.geteuid() != 0:
        raise ToolMissing("emulated links need root (network namespaces, TUN, routes)")
    for tool, package in (("ip", "iproute2"), ("sysctl", "procps")):
        if shutil.which(tool) is None:
            raise ToolMissing(f"{tool} is missing: install {package} (`make system-deps`)")
    if not Path("/dev/net/tun").exists():
        raise ToolMissing("/dev/net/tun is missing: the kernel needs TUN support")


def _process_start(pid: int) -> int | None:
    """The start time (clock ticks since boot) of ``pid``, None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may hold spaces and parentheses; fields resume after the last ')'.
    return int(stat.rsplit(")", 1)[1].split()[19])


def _owner_alive(claim: Mapping[str, Any]) -> bool:
    pid, start = claim.get("pid"), claim.get("start")
    return isinstance(pid, int) and start is not None and _process_start(pid) == start


def _claim() -> Plan:
    """Reserve a free 10.231.N.0/29 for a new link id, atomically against other processes."""
    CLAIMS_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
    seen = _run(["ip", "-4", "-o", "addr", "show"]).stdout + _run(["ip", "-4", "route"]).stdout
    used = {int(n) for n in re.findall(rf"\b{re.escape(NET_PREFIX)}\.(\d+)\.", seen)}
    link_id = secrets.token_hex(3)
    pid = os.getpid()
    record = json.dumps({"id": link_id, "pid": pid, "start": _process_start(pid)})
    free = [n for n in range(256) if n not in used]
    secrets.SystemRandom().shuffle(free)
    for index in free:
        plan = Plan(link_id, index)
        try:
            fd = os.open(plan.claim_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            continue
        with os.fdopen(fd, "w") as f:
            f.write(record)
        return plan
    raise NetlabError(f"no free subnet left in {NET_PREFIX}.0.0/16")


def _build(plan: Plan) -> None:
    """Create the namespaces, veths, TUN, addresses, routes and rules of ``plan``."""
    mid, spoke = plan.mid_ns, plan.spoke_ns
    in_mid = ["ip", "-n", mid]
    in_spoke = ["ip", "-n", spoke]
    steps: list[list[str]] = [
        ["ip", "netns", "add", mid],
        ["ip", "netns", "add", spoke],
        # Before any interface exists there, so new ones inherit the defaults. IPv6 is off
        # inside so that only the IPv4 path exists (no link-local candidates, no RS/MLD noise).
        [
            *("ip", "netns", "exec", mid, "sysctl", "-q", "-w"),
            "net.ipv4.ip_forward=1",
            "net.ipv4.conf.all.rp_filter=0",
            "net.ipv4.conf.default.rp_filter=0",
            "net.ipv6.conf.all.disable_ipv6=1",
            "net.ipv6.conf.default.disable_ipv6=1",
        ],
        [
            *("ip", "netns", "exec", spoke, "sysctl", "-q", "-w"),
            "net.ipv6.conf.all.disable_ipv6=1",
            "net.ipv6.conf.default.disable_ipv6=1",
        ],
        [
            "ip",
            "link",
            "add",
            plan.server_if,
            "type",
            "veth",
            "peer",
            "name",
            plan.mid_server_if,
            "netns",
            mid,
        ],
        ["sysctl", "-q", "-w", f"net.ipv6.conf.{plan.server_if}.disable_ipv6=1"],
        [
            *in_mid,
            "link",
            "add",
            plan.mid_spoke_if,
            "type",
            "veth",
            "peer",
            "name",
            plan.spoke_if,
            "netns",
            spoke,
        ],
        [*in_mid, "tuntap", "add", "dev", plan.tun_if, "mode", "tun"],
        ["ip", "addr", "add", f"{plan.addr(1)}/30", "dev", plan.server_if],
        ["ip", "link", "set", plan.server_if, "up"],
        [*in_mid, "addr", "add", f"{plan.addr(2)}/30", "dev", plan.mid_server_if],
        [*in_mid, "addr", "add", f"{plan.addr(5)}/30", "dev", plan.mid_spoke_if],
        *(
            [*in_mid, "link", "set", dev, "up"]
            for dev in ("lo", plan.mid_server_if, plan.mid_spoke_if, plan.tun_if)
        ),
        [*in_spoke, "addr", "add", f"{plan.addr(6)}/30", "dev", plan.spoke_if],
        [*in_spoke, "link", "set", "lo", "up"],
        [*in_spoke, "link", "set", plan.spoke_if, "up"],
        [*in_spoke, "route", "add", "default", "via", plan.addr(5)],
        [*in_mid, "route", "add", "default", "dev", plan.tun_if, "table", str(TUN_TABLE)],
        # By input interface: what arrives from a veth goes to the TUN, what the stage writes
        # back arrives on the TUN and takes the main table to the other veth.
        *(
            [*in_mid, "rule", "add", "pref", "100", "iif", dev, "lookup", str(TUN_TABLE)]
            for dev in (plan.mid_server_if, plan.mid_spoke_if)
        ),
        ["ip", "route", "add", plan.spoke_net, "via", plan.addr(2), "dev", plan.server_if],
    ]
    for step in steps:
        _run(step)


def _netns_names() -> list[str]:
    out = _run(["ip", "netns", "list"], check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _root_links() -> list[str]:
    out = _run(["ip", "-o", "link", "show"], check=False).stdout
    # "7: setu-ab12cd-s@if6: <...>"
    return [line.split(":", 2)[1].strip().split("@", 1)[0] for line in out.splitlines()]


def _kill_namespace_processes(ns: str) -> None:
    """End every process inside ``ns``: the stage, or programs a caller left running there."""

    def pids() -> list[int]:
        out = _run(["ip", "netns", "pids", ns], check=False).stdout
        return [int(p) for p in out.split() if p.isdigit()]

    left = pids()
    if not left:
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + KILL_GRACE_S
        while (left := pids()) and time.monotonic() < deadline:
            time.sleep(0.02)
        if not left:
            return
    logger.error("processes %s would not leave namespace %s", left, ns)


def _remove(plan: Plan) -> None:
    """Remove everything ``plan`` names; what is already gone is skipped. Idempotent."""
    namespaces = set(_netns_names())
    for ns in (plan.mid_ns, plan.spoke_ns):
        if ns in namespaces:
            _kill_namespace_processes(ns)
    # Deleting the root end deletes its peer and the route through it.
    if plan.server_if in _root_links():
        _run(["ip", "link", "del", plan.server_if], check=False)
    for ns in (plan.mid_ns, plan.spoke_ns):
        if ns in namespaces:
            _run(["ip", "netns", "del", ns], check=False)
    with contextlib.suppress(FileNotFoundError):
        plan.claim_path.unlink()
    left = [n for n in _netns_names() if n.startswith(f"{NAME_PREFIX}{plan.link_id}-")]
    left += [n for n in _root_links() if n.startswith(f"{NAME_PREFIX}{plan.link_id}-")]
    if left:
        raise NetlabError(f"link {plan.link_id}: could not remove {left}")


def sweep_stale_sync() -> list[str]:
    """Remove links whose owner process is gone; returns their ids. Links of live owners,
    in this process or another, are left alone."""
    # Names first, claims second: a link being built now has its claim written before its
    # first namespace exists, so every name listed here is covered by a claim read below.
    namespaces, links = _netns_names(), _root_links()
    live: set[str] = set()
    removed: list[str] = []
    claims = sorted(CLAIMS_DIR.glob("net-*.json")) if CLAIMS_DIR.is_dir() else []
    for path in claims:
        try:
            claim = json.loads(path.read_text())
            index = int(path.stem.removeprefix("net-"))
            link_id = str(claim["id"])
        except (OSError, ValueError, KeyError, TypeError):
            logger.warning("removing unreadable claim %s", path)
            path.unlink(missing_ok=True)
            continue
        if _owner_alive(claim):
            live.add(link_id)
            continue
        logger.warning("link %s: owner %s is gone; removing it", link_id, claim.get("pid"))
        try:
            _remove(Plan(link_id, index))
        except NetlabError as exc:  # one stuck link must not stop the sweep or a new link
            logger.error("%s", exc)
            continue
        removed.append(link_id)
    # Namespaces or interfaces with no claim at all (the claim is written first, removed last).
    for ns in namespaces:
        if (m := _NAME_RE.match(ns)) and m[1] not in live and ns in _netns_names():
            logger.warning("removing unclaimed namespace %s", ns)
            _kill_namespace_processes(ns)
            _run(["ip", "netns", "del", ns], check=False)
            removed.append(m[1])
    for link in links:
        if (m := _NAME_RE.match(link)) and m[1] not in live and link in _root_links():
            logger.warning("removing unclaimed interface %s", link)
            _run(["ip", "link", "del", link], check=False)
            removed.append(m[1])
    return sorted(set(removed))


async def sweep_stale() -> list[str]:
    """:func:`sweep_stale_sync` off the event loop."""
    require_tools()
    return await _in_thread(sweep_stale_sync)


async def _complete(future: asyncio.Future[T]) -> T:
    """The result of ``future``, awaited to the end even through cancellations; one that
    arrived meanwhile is re-raised afterwards. A half-built or half-removed link must not
    race its own cleanup."""
    cancelled = False
    while not future.done():
        try:
            await asyncio.wait({future})
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        if not future.cancelled():
            future.exception()  # retrieved: the cancellation is what the caller sees
        raise asyncio.CancelledError
    return future.result()


async def _in_thread(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` in a worker thread (``ip`` commands block), run to the end."""
    return await _complete(asyncio.ensure_future(asyncio.to_thread(fn, *args)))


# ------------------------------------------------------------------------------ stage protocol


@dataclass(frozen=True)
class _Reply:
    id: int
    ok: bool
    error: str
    stats: dict[str, Any] | None


@dataclass(frozen=True)
class _Event:
    kind: str
    stats: dict[str, Any] | None


def _parse_stage_line(raw: bytes) -> _Reply | _Event:
    message = json.loads(raw)
    if not isinstance(message, dict):
        raise NetlabError(f"stage sent {raw!r}")
    stats = message.get("stats")
    if stats is not None and not isinstance(stats, dict):
        raise NetlabError(f"stage sent stats that are not an object: {raw!r}")
    if "event" in message:
        return _Event(str(message["event"]), stats)
    ident, ok = message.get("id"), message.get("ok")
    if not isinstance(ok, bool) or not (ident is None or isinstance(ident, int)):
        raise NetlabError(f"stage sent {raw!r}")
    return _Reply(-1 if ident is None else ident, ok, str(message.get("error", "")), stats)


# ------------------------------------------------------------------------------ the link


class WeakLink:
    """An emulated weak link between the root namespace (the server's side) and a spoke
    namespace. Use ``async with WeakLink(SCENARIOS["rural"]) as link:``; leaving the block
    removes everything, also on an exception or a cancellation (Ctrl-C).

    ``seed`` makes the loss and jitter sequence repeatable. ``realtime`` is the stage's
    SCHED_FIFO priority (0: normal scheduling): on a loaded 2-core machine (a server and two
    browsers) an ordinary process wakes up several milliseconds late now and then, which would
    add jitter the link spec did not ask for. The stage sleeps between packets, so it takes
    little CPU even so.
    """

    def __init__(
        self,
        spec: LinkSpec = CLEAR,
        *,
        seed: int | None = None,
        realtime: int = STAGE_RT_PRIORITY,
        stage_log_level: str = "WARNING",
    ) -> None:
        self._spec = spec
        self._realtime = realtime
        self._seed = seed
        self._stage_log_level = stage_log_level
        self._plan: Plan | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._ready: asyncio.Future[None] | None = None
        self._pending: dict[int, asyncio.Future[_Reply]] = {}
        self._next_id = 0
        self._stats: dict[str, Any] = {}
        self._closing: asyncio.Task[None] | None = None
        self._started = False
        self._atexit: Callable[[], None] | None = None

    # -- names

    @property
    def plan(self) -> Plan:
        if self._plan is None:
            raise NetlabError("the link is not up")
        return self._plan

    @property
    def link_id(self) -> str:
        return self.plan.link_id

    @property
    def server_addr(self) -> str:
        """The root namespace's address on the link: bind the server here."""
        return self.plan.addr(1)

    @property
    def spoke_addr(self) -> str:
        return self.plan.addr(6)

    @property
    def spoke_netns(self) -> str:
        return self.plan.spoke_ns

    @property
    def middle_netns(self) -> str:
        return self.plan.mid_ns

    @property
    def spec(self) -> LinkSpec:
        return self._spec

    def netns_command(self, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside the spoke namespace."""
        return ["ip", "netns", "exec", self.spoke_netns, *argv]

    # -- lifecycle

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def start(self) -> None:
        """Build the namespaces and start the stage with :attr:`spec` applied."""
        if self._started:
            raise NetlabError("a WeakLink starts once")
        self._started = True
        require_tools()
        await _in_thread(sweep_stale_sync)
        claim = asyncio.ensure_future(asyncio.to_thread(_claim))
        # Recorded as soon as it exists, even if start() is cancelled meanwhile: close() then
        # removes it.
        claim.add_done_callback(self._claimed)
        try:
            plan = await _complete(claim)
            await _in_thread(_build, plan)
            await self._start_stage(plan)
            await self.set(self._spec)
        except BaseException:
            await self.close()
            raise
        logger.info(
            "link %s: up, server %s, spoke %s in %s, %s",
            plan.link_id,
            self.server_addr,
            self.spoke_addr,
            plan.spoke_ns,
            self._spec,
        )

    def _claimed(self, claim: asyncio.Future[Plan]) -> None:
        if claim.cancelled() or claim.exception() is not None:
            return
        self._plan = plan = claim.result()
        # Should the loop die without close(), the interpreter's exit still removes the link.
        self._atexit = functools.partial(_remove_quietly, plan)
        atexit.register(self._atexit)

    async def _start_stage(self, plan: Plan) -> None:
        argv = [
            *("ip", "netns", "exec", plan.mid_ns, sys.executable, str(STAGE_SCRIPT)),
            *("--tun", plan.tun_if, "--spoke-net", plan.spoke_net),
            *("--log-level", self._stage_log_level),
            *("--realtime", str(self._realtime)),
        ]
        if self._seed is not None:
            argv += ["--seed", str(self._seed)]
        self._ready = asyncio.get_running_loop().create_future()
        # Its own session: a terminal's Ctrl-C reaches us, and we stop the stage in order.
        self._proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            start_new_session=True,
            limit=1 << 20,
        )
        self._reader = asyncio.create_task(self._read_stage(self._proc))
        try:
            await asyncio.wait_for(asyncio.shield(self._ready), STAGE_READY_TIMEOUT_S)
        except TimeoutError:
            raise NetlabError(f"link {plan.link_id}: the stage did not start") from None

    async def close(self) -> None:
        """Stop the stage and remove the namespaces, interfaces, routes and claim. Idempotent;
        a cancellation arriving meanwhile is held until the removal is done, then re-raised."""
        if self._closing is None:
            self._closing = asyncio.create_task(self._teardown())
        await _complete(self._closing)

    async def _teardown(self) -> None:
        proc, plan = self._proc, self._plan
        if proc is not None and proc.stdin is not None and proc.returncode is None:
            # Closing stdin asks the stage to stop; the removal below kills it otherwise.
            proc.stdin.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), KILL_GRACE_S)
        if plan is not None:
            await _in_thread(_remove, plan)
            if self._atexit is not None:
                atexit.unregister(self._atexit)
                self._atexit = None
            logger.info("link %s: removed", plan.link_id)
        if proc is not None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        self._fail_pending(NetlabError("the link is closed"))

    async def _read_stage(self, proc: asyncio.subprocess.Process) -> None:
        """The one reader of the stage's stdout: replies, readiness and pushed stats."""
        if proc.stdout is None:
            raise NetlabError("the stage has no stdout")
        try:
            while raw := await proc.stdout.readline():
                try:
                    message = _parse_stage_line(raw)
                except (ValueError, NetlabError):
                    logger.error("stage sent an unreadable line: %r", raw[:200])
                    continue
                if message.stats is not None:
                    self._stats = message.stats
                if isinstance(message, _Event):
                    if message.kind == "ready" and self._ready and not self._ready.done():
                        self._ready.set_result(None)
                    continue
                future = self._pending.pop(message.id, None)
                if future is not None and not future.done():
                    future.set_result(message)
        finally:
            code = await proc.wait()
            if self._closing is None:
                logger.error("link: the stage exited (%s) while the link was up", code)
            error = NetlabError(f"the stage exited with status {code}")
            if self._ready is not None and not self._ready.done():
                self._ready.set_exception(error)
                self._ready.exception()  # retrieved here; start() re-raises it when waiting
            self._fail_pending(error)

    def _fail_pending(self, error: Exception) -> None:
        for future in self._pending.values():
            if not future.done():
                future.set_exception(error)
        self._pending.clear()

    async def _request(self, op: str, **fields: Any) -> dict[str, Any]:
        proc = self._proc
        if proc is None or proc.stdin is None or self._closing is not None:
            raise NetlabError("the link is not up")
        if proc.returncode is not None:
            raise NetlabError(f"the stage exited with status {proc.returncode}")
        self._next_id += 1
        ident = self._next_id
        future: asyncio.Future[_Reply] = asyncio.get_running_loop().create_future()
        self._pending[ident] = future
        try:
            proc.stdin.write(json.dumps({"id": ident, "op": op, **fields}).encode() + b"\n")
            await proc.stdin.drain()
            reply = await asyncio.wait_for(future, REQUEST_TIMEOUT_S)
        finally:
            self._pending.pop(ident, None)
        if not reply.ok:
            raise NetlabError(f"stage refused {op}: {reply.error}")
        return reply.stats or {}

    # -- control

    async def set(self, spec: LinkSpec) -> None:
        """Change the impairment live. Packets already queued keep their schedule."""
        one_way = spec.one_way()
        await self._request("set", to_server=one_way, to_spoke=one_way)
        if spec != self._spec:
            logger.info("link %s: %s -> %s", self.link_id, self._spec, spec)
        self._spec = spec

    async def outage(self, on: bool) -> None:
        """Lose every packet both ways while ``on``; turning it on also loses what is in
        flight, so nothing at all arrives until it is turned off."""
        await self._request("outage", on=on)
        logger.info("link %s: outage %s", self.link_id, "on" if on else "off")

    async def drop_next(
        self,
        match: str = "video",
        *,
        retransmissions: bool = True,
        payload_type: int | None = None,
        ssrc: int | None = None,
    ) -> None:
        """Drop the next RTP packet of kind ``match`` ("video" or "audio") going from the
        spoke to the server, and by default its retransmissions too (a resend with the same
        SSRC and sequence number, or an RTX packet carrying the same RTP timestamp), so the
        loss is never repaired. Returns once armed; ``stats()["targeted_drops"]`` lists the
        packet once it went. ``payload_type`` and ``ssrc``, when the caller knows them from
        the SDP, narrow the match (an RTX stream also runs on a 90 kHz clock). Padding-only
        packets (the P bit: Chromium's bandwidth probes) are never the target.

        SRTP leaves the 12-byte RTP header in clear. A UDP payload is RTP if it starts with
        version 2 and its payload type is neither 0-35 (static audio types) nor 64-95 (RTCP
        once the marker bit is masked). It is video if its stream's RTP clock, measured over
        half a second or more, is above 70 kHz (video uses 90 kHz, audio 48 kHz or less);
        before that, if the payload is over 200 bytes (video packets fill the MTU, Opus
        packets of 20 ms are smaller, except aiortc's Opus at 96 kbit/s).
        """
        if match not in ("video", "audio"):
            raise ValueError(f"match must be 'video' or 'audio', not {match!r}")
        await self._request(
            "drop_next",
            match=match,
            retransmissions=retransmissions,
            payload_type=payload_type,
            ssrc=ssrc,
        )

    def stats(self) -> dict[str, Any]:
        """The stage's counters, at most a quarter second old: per direction (``to_server``,
        ``to_spoke``) packets and bytes in and out, drops by cause (``loss``, ``queue``,
        ``outage``, ``targeted``), the worst queue backlog; ``targeted_drops``; and the
        stage's own timing error (``lateness_ms``: how late packets left, p50/p99/max)."""
        return copy.deepcopy(self._stats)

    async def fetch_stats(self) -> dict[str, Any]:
        """The counters as of now."""
        return copy.deepcopy(await self._request("stats"))


def _remove_quietly(plan: Plan) -> None:
    try:
        _remove(plan)
    except NetlabError as exc:
        logger.error("%s", exc)


# ------------------------------------------------------------------------------ command line


async def _hold(spec: LinkSpec, seconds: float | None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with WeakLink(spec) as link:
        sys.stdout.write(
            json.dumps(
                {
                    "link_id": link.link_id,
                    "server_addr": link.server_addr,
                    "spoke_addr": link.spoke_addr,
                    "spoke_netns": link.spoke_netns,
                    "spec": dataclasses.asdict(spec),
                }
            )
            + "\n"
        )
        sys.stdout.flush()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)
        sys.stdout.write(json.dumps(link.stats()) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Emulated weak links for Setu's tests")
    sub = parser.add_subparsers(dest="command", required=True)
    hold = sub.add_parser("hold", help="bring a link up and keep it until Ctrl-C")
    hold.add_argument("scenario", choices=sorted(SCENARIOS))
    hold.add_argument("--seconds", type=float, default=None)
    sub.add_parser("sweep", help="remove links whose owner process is gone")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(message)s")
    if args.command == "sweep":
        require_tools()
        sys.stdout.write(json.dumps({"removed": sweep_stale_sync()}) + "\n")
        return 0
    asyncio.run(_hold(SCENARIOS[args.scenario], args.seconds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
