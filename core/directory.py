"""The directory: hubs, blocks, spokes and the people who use them, read from a TOML file.

The file is validated once, strictly (unknown keys are errors), into frozen models.  The rest
of Setu asks the :class:`Directory` and never reads TOML.
"""

from __future__ import annotations

import tomllib
import zoneinfo
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Self, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)

from .domain import ID_PATTERN, BlockId, HubId, Role, SpokeId, UserId
from .service import Service

K = TypeVar("K")
V = TypeVar("V")

DEMO_DIRECTORY = Path(__file__).with_name("demo-directory.toml")

Ident = Annotated[str, StringConstraints(pattern=ID_PATTERN.pattern)]
Name = Annotated[str, StringConstraints(min_length=1, max_length=120, strip_whitespace=True)]
Username = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")]


class DirectoryError(Exception):
    """The directory file is missing, unreadable or inconsistent."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Hub(_Model):
    id: Ident
    name: Name
    name_hi: Name | None = None
    district: Name | None = None
    timezone: str = "Asia/Kolkata"
    #: Daily service windows; a hub without any serves nobody (``check-config`` reports it).
    service: Service = Field(default_factory=Service)

    @model_validator(mode="after")
    def _known_timezone(self) -> Self:
        try:
            zoneinfo.ZoneInfo(self.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {self.timezone!r}") from exc
        return self

    @property
    def tz(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.timezone)


class Block(_Model):
    id: Ident
    name: Name
    name_hi: Name | None = None
    district: Name | None = None


class Spoke(_Model):
    id: Ident
    name: Name
    name_hi: Name | None = None
    block: Ident
    hub: Ident


class User(_Model):
    username: Username
    name: Name
    role: Role
    hub: Ident | None = None
    spoke: Ident | None = None
    #: Medical council registration number; printed on records of a doctor's consultations.
    registration: Name | None = None

    @model_validator(mode="after")
    def _belongs_where_role_says(self) -> Self:
        if self.role is Role.NURSE and (self.spoke is None or self.hub is not None):
            raise ValueError("a nurse belongs to exactly one spoke (set 'spoke', not 'hub')")
        if self.role is Role.DOCTOR and (self.hub is None or self.spoke is not None):
            raise ValueError("a doctor belongs to exactly one hub (set 'hub', not 'spoke')")
        if self.role in (Role.AUDITOR, Role.ADMIN) and (self.hub or self.spoke):
            raise ValueError(f"an {self.role} belongs to no hub or spoke")
        return self

    @property
    def id(self) -> UserId:
        return UserId(self.username)


class _DirectoryFile(_Model):
    hubs: list[Hub] = Field(default_factory=list)
    blocks: list[Block] = Field(default_factory=list)
    spokes: list[Spoke] = Field(default_factory=list)
    users: list[User] = Field(default_factory=list)


class Directory:
    """Read-only lookups over a validated directory."""

    def __init__(
        self,
        hubs: Iterable[Hub],
        blocks: Iterable[Block],
        spokes: Iterable[Spoke],
        users: Iterable[User],
    ) -> None:
        self.hubs: dict[HubId, Hub] = _unique("hub", ((HubId(h.id), h) for h in hubs))
        self.blocks: dict[BlockId, Block] = _unique("block", ((BlockId(b.id), b) for b in blocks))
        self.spokes: dict[SpokeId, Spoke] = _unique("spoke", ((SpokeId(s.id), s) for s in spokes))
        self.users: dict[UserId, User] = _unique("user", ((u.id, u) for u in users))
        self._check_references()

    def _check_references(self) -> None:
        problems: list[str] = []
        for spoke in self.spokes.values():
            if spoke.hub not in self.hubs:
                problems.append(f"spoke {spoke.id!r} names unknown hub {spoke.hub!r}")
            if spoke.block not in self.blocks:
                problems.append(f"spoke {spoke.id!r} names unknown block {spoke.block!r}")
        for user in self.users.values():
            if user.hub is not None and user.hub not in self.hubs:
                problems.append(f"user {user.username!r} names unknown hub {user.hub!r}")
            if user.spoke is not None and user.spoke not in self.spokes:
                problems.append(f"user {user.username!r} names unknown spoke {user.spoke!r}")
        if problems:
            raise DirectoryError("; ".join(problems))

    @classmethod
    def load(cls, path: Path) -> Directory:
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise DirectoryError(f"cannot read directory {path}: {exc.strerror}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise DirectoryError(f"{path}: not valid TOML: {exc}") from exc
        try:
            parsed = _DirectoryFile.model_validate(raw)
        except ValidationError as exc:
            raise DirectoryError(f"{path}: {_describe(exc)}") from exc
        return cls(parsed.hubs, parsed.blocks, parsed.spokes, parsed.users)

    def hub(self, hub_id: str) -> Hub:
        try:
            return self.hubs[HubId(hub_id)]
        except KeyError:
            raise DirectoryError(f"unknown hub {hub_id!r}") from None

    def spoke(self, spoke_id: str) -> Spoke:
        try:
            return self.spokes[SpokeId(spoke_id)]
        except KeyError:
            raise DirectoryError(f"unknown spoke {spoke_id!r}") from None

    def user(self, username: str) -> User | None:
        return self.users.get(UserId(username))

    def hub_of(self, user: User) -> HubId | None:
        """The hub whose queue a user works with: a doctor's own hub, a nurse's spoke's hub."""
        if user.hub is not None:
            return HubId(user.hub)
        if user.spoke is not None:
            return HubId(self.spokes[SpokeId(user.spoke)].hub)
        return None


def _unique(what: str, items: Iterable[tuple[K, V]]) -> dict[K, V]:
    out: dict[K, V] = {}
    for key, value in items:
        if key in out:
            raise DirectoryError(f"duplicate {what} id {key!r}")
        out[key] = value
    return out


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"])
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)
