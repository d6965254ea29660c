"""How tokens and queues look to each role, as outgoing messages."""

from __future__ import annotations

from datetime import datetime

from core.directory import Directory, User
from core.domain import Role, SpokeId
from rooms import HubSnapshot, Token
from rooms.waiting_room import TURN_NEAR_POSITIONS

from . import messages as m


def token_out(
    token: Token,
    directory: Directory,
    position: int | None = None,
    estimate: int | None = None,
) -> m.TokenOut:
    spoke = directory.spokes.get(SpokeId(token.spoke))
    doctor = directory.user(token.doctor) if token.doctor else None
    return m.TokenOut(
        id=token.id,
        number=token.number,
        hub=token.hub,
        spoke=token.spoke,
        spoke_name=spoke.name if spoke else token.spoke,
        state=token.state.value,
        patient=m.PatientOut(
            name=token.patient.name,
            age=token.patient.age,
            sex=token.patient.sex.value,
            complaint=token.patient.complaint,
            phone=token.patient.phone,
            priority=token.patient.priority.value,
        ),
        issued_at=token.issued_at.isoformat(),
        position=position,
        estimated_wait_minutes=estimate,
        turn_near=position is not None and position <= TURN_NEAR_POSITIONS,
        room_id=token.room,
        doctor=token.doctor,
        doctor_name=doctor.name if doctor else None,
    )


def queue_for(
    user: User, snapshot: HubSnapshot, directory: Directory, opens_at: datetime | None
) -> m.QueueOut:
    """The queue as ``user`` may see it: a doctor the whole hub, a nurse her own spoke."""
    positions = {t.id: i + 1 for i, t in enumerate(snapshot.waiting)}
    default_consult = float(directory.hub(snapshot.hub).service.consultation_minutes)

    def out(t: Token) -> m.TokenOut:
        position = positions.get(t.id)
        estimate = snapshot.estimated_wait_minutes(position, default_consult) if position else None
        token = token_out(t, directory, position, estimate)
        if t.spoke in snapshot.spokes_away:
            token = token.model_copy(update={"spoke_away": True})
        return token

    mine = (lambda t: t.spoke == user.spoke) if user.role is Role.NURSE else (lambda t: True)
    hub = directory.hub(snapshot.hub)
    return m.QueueOut(
        hub=hub.id,
        hub_name=hub.name,
        waiting=[out(t) for t in snapshot.waiting if mine(t)],
        today=[out(t) for t in snapshot.today if mine(t)],
        waiting_total=len(snapshot.waiting),
        held=[token_out(t, directory) for t in snapshot.held if mine(t)],
        service_open=snapshot.window is not None,
        doctors_on_duty=snapshot.doctors_on_duty,
        closes_at=snapshot.closes_at.isoformat() if snapshot.closes_at else None,
        opens_at=opens_at.isoformat() if opens_at and snapshot.window is None else None,
    )
