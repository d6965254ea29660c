"""A consultation's record: its timeline, the consent, the recording and the signed manifest.

Every consultation, recorded or not, ends with a manifest signed by the server's key and a
``consultation_ended`` entry in the audit log that carries the manifest's hash (see
``docs/recording.md``).  While a recording runs, ``recording.json`` holds what is known so far,
so that a server that dies mid-call leaves enough for the next start to seal it as interrupted.

All file work (creating directories, writing the marker and the manifest, hashing) runs in
threads; the event loop only keeps the timeline.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from audit import (
    Archive,
    AuditTrail,
    SigningKey,
    iso,
    read_manifest,
    seal_interrupted,
    sha256_file,
    write_json_atomic,
)
from audit import write_manifest as _write_manifest
from core.directory import Directory
from core.domain import (
    ConsentGiver,
    ConsentMethod,
    ConsentState,
    EndReason,
    HubId,
    Participant,
    RecordingState,
    RoomId,
)
from core.tasks import TaskOwner
from media import MediaRoom, RecordedFile, Recorder

from .consent import Consent
from .waiting_room import Clock, Token

logger = logging.getLogger(__name__)

MANIFEST_VERSION = 1
_SEGMENT = re.compile(r"^(spoke|hub)-(\d+)\.webm$")


@dataclasses.dataclass(frozen=True)
class Archiving:
    """Where consultations leave their record: the audit log, the archive and the signing key."""

    trail: AuditTrail
    archive: Archive
    key: SigningKey
    node: str
    #: ``--recording off`` keeps manifests and the audit log but never records media.
    record_media: bool = True


@dataclasses.dataclass(frozen=True)
class Previous:
    """What an earlier life of the consultation left: its server died and it was re-opened."""

    manifest: dict[str, Any]
    sha256: str


def load_previous(archiving: Archiving, room_id: str, now: datetime) -> Previous | None:
    """The signed record a consultation already has, sealing a crash leftover first (blocking).

    A room is re-opened after the process that held it died.  Its recording, if one was
    running, is sealed as interrupted (as a restart would), and the new life of the room
    carries that record on: earlier files and events stay in the consultation's manifest.
    """
    folder = archiving.archive.find(room_id)
    if folder is None:
        return None
    if (folder / "recording.json").exists() and not (folder / "manifest.json").exists():
        seal_interrupted(folder, archiving.key, archiving.trail.log, node=archiving.node, now=now)
    manifest = read_manifest(folder)
    if manifest is None:
        return None
    digest, _ = sha256_file(folder / "manifest.json")
    return Previous(manifest, digest)


@dataclasses.dataclass(frozen=True)
class TimelineEvent:
    at: datetime
    kind: str
    seat: Participant | None = None
    by: str | None = None
    detail: dict[str, Any] = dataclasses.field(default_factory=dict)


class Journal:
    """Keeps one consultation's timeline and consent, runs its recording, writes its manifest."""

    def __init__(
        self,
        *,
        room_id: RoomId,
        hub: HubId,
        token: Token,
        started_at: datetime,
        directory: Directory,
        archiving: Archiving,
        clock: Clock,
        media: MediaRoom,
        previous: Previous | None = None,
    ) -> None:
        self.room_id = room_id
        self.hub = hub
        self.token = token
        self.started_at = started_at
        self._directory = directory
        self._archiving = archiving
        self._clock = clock
        self._media = media
        self.consent = Consent()
        self.recording = RecordingState.OFF if archiving.record_media else RecordingState.DISABLED
        self.events: list[TimelineEvent] = []
        self._recorder: Recorder | None = None
        self._files: list[RecordedFile] = []
        self._folder: Path | None = None
        self._t0: datetime | None = None
        self._recording_started: datetime | None = None
        self._recording_stopped: datetime | None = None
        # Writes of recording.json and the manifest happen one at a time, in order.
        self._write_lock = asyncio.Lock()
        self._sealed = False
        #: Set when the room starts ending: a confirmation still in flight must not start a
        #: recording that nobody would stop.
        self.ending = False
        self._tasks = TaskOwner(f"journal {room_id}")
        self._previous = previous
        self._superseded = False
        if previous is not None:
            self.consent = Consent.from_record(previous.manifest.get("consent"))
            self.note("resumed", after=previous.manifest.get("end_reason"))

    # ------------------------------------------------------------------ timeline

    def note(
        self,
        kind: str,
        *,
        seat: Participant | None = None,
        by: str | None = None,
        at: datetime | None = None,
        **detail: Any,
    ) -> None:
        """Add an event to the timeline (and to recording.json while recording)."""
        self.events.append(TimelineEvent(at or self._clock(), kind, seat, by, detail))
        if self.recording is RecordingState.RECORDING:
            self._tasks.spawn(self._write_marker(), name="marker")

    async def _audit(self, kind: str, actor: str | None, source: str | None, **detail: Any) -> None:
        await self._archiving.trail.record(
            kind,
            at=self._clock(),
            actor=actor,
            source=source,
            subject=self.room_id,
            detail=detail,
        )

    # ------------------------------------------------------------------ consent

    async def record_consent(
        self,
        by: str,
        source: str | None,
        *,
        given_by: ConsentGiver,
        method: ConsentMethod,
        caregiver: str | None,
        relation: str | None,
    ) -> None:
        self.consent.record(
            by=by,
            at=self._clock(),
            given_by=given_by,
            method=method,
            caregiver=caregiver,
            relation=relation,
        )
        self.note(
            "consent_recorded",
            seat=Participant.SPOKE,
            by=by,
            given_by=given_by.value,
            method=method.value,
            caregiver=caregiver,
            relation=relation,
        )
        await self._audit(
            "consent_recorded",
            by,
            source,
            given_by=given_by.value,
            method=method.value,
            caregiver=caregiver,
            relation=relation,
        )

    async def confirm_consent(self, by: str, source: str | None) -> None:
        self.consent.confirm(by=by, at=self._clock())
        self.note("consent_confirmed", seat=Participant.HUB, by=by)
        await self._audit("consent_confirmed", by, source)
        if self.recording is RecordingState.OFF:
            await self._start_recording(by)

    async def withdraw_consent(self, by: str, seat: Participant, source: str | None) -> None:
        self.consent.withdraw(by=by, at=self._clock())
        self.note("consent_withdrawn", seat=seat, by=by)
        await self._audit("consent_withdrawn", by, source)
        await self.stop_recording("consent_withdrawn")

    # ------------------------------------------------------------------ recording

    def _folder_for(self) -> Path:
        return self._archiving.archive.directory_for(self.room_id, self.started_at)

    def _prepare_folder(self) -> tuple[Path, int]:
        """The consultation's folder, its earlier manifest set aside, and the next segment."""
        folder = self._folder_for()
        self._supersede(folder)
        used = [int(m.group(2)) for p in folder.iterdir() if (m := _SEGMENT.match(p.name))]
        return folder, max(used, default=0) + 1

    def _supersede(self, folder: Path) -> None:
        """Move an earlier life's manifest aside (``manifest-<n>.json``): while this life runs,
        the folder has no manifest, so a crash now is sealed like any other."""
        if self._previous is None or self._superseded:
            return
        self._superseded = True
        current = folder / "manifest.json"
        if not current.exists():
            return
        n = 1
        while (folder / f"manifest-{n}.json").exists():
            n += 1
        (folder / "manifest.sig").replace(folder / f"manifest-{n}.sig")
        current.replace(folder / f"manifest-{n}.json")

    async def resume_recording(self) -> None:
        """Carry on recording in a re-opened consultation whose consent stands."""
        if self.consent.state is ConsentState.CONFIRMED and self.recording is RecordingState.OFF:
            await self._start_recording(None)

    async def _start_recording(self, by: str | None) -> None:
        folder, segment = await asyncio.to_thread(self._prepare_folder)
        self._folder = folder
        if self.ending or self.recording is not RecordingState.OFF:
            return
        self._t0 = self._recording_started = self._clock()
        self._recorder = Recorder(
            folder,
            self.room_id,
            t0=time.monotonic(),
            request_keyframe=self._media.request_keyframe,
            segment=segment,
        )
        self.recording = RecordingState.RECORDING
        self._media.add_consumer(self._recorder)
        logger.info("room %s: recording started", self.room_id)
        self.note("recording_started", by=by)
        await self._audit("recording_started", by, None, t0=iso(self._t0), segment=segment)

    async def stop_recording(self, reason: str) -> None:
        """Stop recording (consent withdrawn, or the end); closes the files (idempotent)."""
        recorder, self._recorder = self._recorder, None
        if recorder is None:
            return
        self._media.remove_consumer(recorder)
        self.recording = RecordingState.STOPPED
        self._recording_stopped = self._clock()
        try:
            self._files.extend(await recorder.close())
        finally:
            logger.info("room %s: recording stopped (%s)", self.room_id, reason)
            self.note("recording_stopped", reason=reason)
            await self._audit(
                "recording_stopped", None, None, reason=reason, files=[f.name for f in self._files]
            )
            await self._write_marker()

    # ------------------------------------------------------------------ records

    def consent_record(self) -> dict[str, Any] | None:
        return self.consent.as_record()

    def _header(self) -> dict[str, Any]:
        """The manifest fields known before the end."""
        token, directory = self.token, self._directory
        hub = directory.hub(token.hub)
        spoke = directory.spoke(token.spoke)
        doctor = directory.user(token.doctor) if token.doctor else None
        nurse = directory.user(token.nurse)
        p = token.patient
        return {
            "v": MANIFEST_VERSION,
            "consultation": self.room_id,
            "token": token.id,
            "hub": {"id": hub.id, "name": hub.name},
            "spoke": {"id": spoke.id, "name": spoke.name},
            "doctor": {
                "username": token.doctor,
                "name": doctor.name if doctor else None,
                "registration": doctor.registration if doctor else None,
            },
            "nurse": {"username": token.nurse, "name": nurse.name if nurse else None},
            "patient": {
                "name": p.name,
                "age": p.age,
                "sex": p.sex.value,
                "complaint": p.complaint,
                "phone": p.phone,
                "priority": p.priority.value,
            },
            "started_at": iso(self.started_at),
            "consent": self.consent.as_record(),
            "recording": {
                "state": self.recording.value,
                "t0": iso(self._t0) if self._t0 else None,
                "started_at": iso(self._recording_started) if self._recording_started else None,
                "stopped_at": iso(self._recording_stopped) if self._recording_stopped else None,
            },
            "events": self._prior_events() + [self._event_record(e) for e in self.events],
            "node": self._archiving.node,
            "key_id": self._archiving.key.key_id,
        }

    def _prior_events(self) -> list[dict[str, Any]]:
        if self._previous is None:
            return []
        return list(self._previous.manifest.get("events") or [])

    def _event_record(self, event: TimelineEvent) -> dict[str, Any]:
        return {
            "at": iso(event.at),
            "t": round((event.at - self.started_at).total_seconds(), 3),
            "kind": event.kind,
            "seat": event.seat.value if event.seat else None,
            "by": event.by,
            "detail": event.detail,
        }

    async def _write_marker(self) -> None:
        if self._folder is None or self._sealed:
            return
        async with self._write_lock:
            if self._sealed:
                return
            marker = self._header()
            if self.recording is RecordingState.RECORDING:
                marker["recording"]["state"] = "recording"
            await asyncio.to_thread(write_json_atomic, self._folder / "recording.json", marker)

    async def seal(self, reason: EndReason) -> None:
        """Stop recording, write and sign the manifest and log the end (once)."""
        await self.stop_recording("ended")
        async with self._write_lock:
            if self._sealed:
                return
            self._sealed = True
            ended = self._clock()
            self.note("ended", reason=reason.value)
            manifest = self._header()
            prior_files: list[dict[str, Any]] = []
            if self._previous is not None:
                earlier = self._previous.manifest
                t0 = (earlier.get("recording") or {}).get("t0")
                # Each file's times count from its own life's recording start.
                prior_files = [{"t0": t0, **f} for f in earlier.get("files") or []]
                manifest["previous"] = {
                    "sha256": self._previous.sha256,
                    "ended_at": self._previous.manifest.get("ended_at"),
                    "end_reason": self._previous.manifest.get("end_reason"),
                }
            recorded = bool(self._files or prior_files)
            manifest["recording"]["state"] = "recorded" if recorded else "none"
            manifest.update(
                ended_at=iso(ended),
                duration_s=round((ended - self.started_at).total_seconds(), 3),
                end_reason=reason.value,
                interrupted=False,
            )
            files = prior_files + await asyncio.to_thread(self._describe_files)
            manifest["files"] = files
            folder = self._folder
            if folder is None:
                folder = await asyncio.to_thread(self._folder_for)
            await asyncio.to_thread(self._supersede, folder)
            digest = await asyncio.to_thread(_write_manifest, folder, manifest, self._archiving.key)
        await self._audit(
            "consultation_ended",
            None,
            None,
            manifest_sha256=digest,
            files=[{k: f[k] for k in ("name", "sha256", "bytes")} for f in files],
            recording=manifest["recording"]["state"],
            reason=reason.value,
        )
        logger.info("room %s: manifest written (%d files)", self.room_id, len(files))

    async def close(self) -> None:
        """Wait for pending marker writes (after :meth:`seal`, they do nothing)."""
        await self._tasks.close()

    def _describe_files(self) -> list[dict[str, Any]]:
        out = []
        for f in self._files:
            digest, size = sha256_file(f.path)
            out.append(
                {
                    "name": f.name,
                    "t0": iso(self._t0) if self._t0 else None,
                    "seat": f.seat.value,
                    "segment": f.segment,
                    "sha256": digest,
                    "bytes": size,
                    "first_s": f.first_s,
                    "last_s": f.last_s,
                    "interrupted": f.interrupted,
                    "gaps": [
                        {"track": g.track, "from_s": g.from_s, "to_s": g.to_s} for g in f.gaps
                    ],
                }
            )
        return out
