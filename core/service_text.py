"""A hub's service as an administrator reads and writes it: the directory's ``[hubs.service]``
section in TOML, and validation problems in words rather than as a stack trace.

The text written here parses back to the same :class:`~core.service.Service`, and can be pasted
under a hub's ``[[hubs]]`` in the directory file to make an edit permanent.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from .service import Service

#: Bounds on what one edit may hold: the text, and the entries of each list in it.
MAX_TEXT_CHARS = 32 * 1024
MAX_ENTRIES = 400
_LISTS = ("windows", "closures", "extra_days")
_SECTION = "hubs.service"


class InvalidService(Exception):
    """A service that cannot be used, with every problem found in it, in words."""

    code = "invalid_service"

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems = tuple(problems)
        super().__init__("; ".join(self.problems))


def parse_service(text: str) -> Service:
    """The :class:`Service` written in ``text`` (TOML); :class:`InvalidService` otherwise.

    ``text`` is either the ``[hubs.service]`` section as the directory file has it, or the
    same keys at the top level.  Unknown keys, bad times and overlapping windows are problems.
    """
    if len(text) > MAX_TEXT_CHARS:
        raise InvalidService([f"the text is longer than {MAX_TEXT_CHARS} characters"])
    try:
        raw: dict[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InvalidService([f"not valid TOML: {exc}"]) from None
    if "hubs" in raw:
        hubs = raw.pop("hubs")
        if raw or not isinstance(hubs, dict) or set(hubs) - {"service"}:
            raise InvalidService(
                [f"write only the [{_SECTION}] section (and its windows, closures, extra days)"]
            )
        raw = hubs.get("service", {})
    return validate_service(raw)


def validate_service(raw: Mapping[str, Any]) -> Service:
    """``raw`` (parsed TOML or JSON) as a :class:`Service`; :class:`InvalidService` otherwise."""
    problems = [
        f"{name}: more than {MAX_ENTRIES} entries"
        for name in _LISTS
        if isinstance(raw.get(name), list) and len(raw[name]) > MAX_ENTRIES
    ]
    if problems:
        raise InvalidService(problems)
    try:
        return Service.model_validate(raw)
    except ValidationError as exc:
        raise InvalidService(describe(exc)) from None


def check_bounds(service: Service) -> None:
    """Refuse a service (built in code) with more entries than an edit may hold."""
    problems = [
        f"{name}: more than {MAX_ENTRIES} entries"
        for name in _LISTS
        if len(getattr(service, name)) > MAX_ENTRIES
    ]
    if problems:
        raise InvalidService(problems)


def describe(exc: ValidationError) -> list[str]:
    """One line per problem, naming where it is (lists numbered from 1, as a reader counts)."""
    return [_describe_one(err) for err in exc.errors()]


def _describe_one(err: ErrorDetails) -> str:
    parts: list[str] = []
    for part in err["loc"]:
        if isinstance(part, int) and parts:
            parts[-1] += f"[{part + 1}]"
        else:
            parts.append(str(part))
    where = ".".join(parts)
    kind = err["type"]
    if kind == "extra_forbidden":
        message = "unknown key"
    elif kind == "string_pattern_mismatch":
        message = f"{err['input']!r} is not a time of day (write HH:MM, from 00:00 to 24:00)"
    elif kind == "missing":
        message = "missing"
    else:
        message = err["msg"].removeprefix("Value error, ")
    return f"{where}: {message}" if where else message


def service_toml(service: Service) -> str:
    """``service`` as the directory's ``[hubs.service]`` section (every field, so that saving
    the text back changes nothing)."""
    data = service.model_dump(mode="json", exclude_none=True)
    lines = [f"[{_SECTION}]"]
    for key, value in data.items():
        if value == [] and Service.model_fields[key].default == ():
            continue
        if not _is_tables(value):
            lines.append(f"{key} = {_value(value)}")
    for key, value in data.items():
        if _is_tables(value):
            for item in value:
                lines += ["", f"[[{_SECTION}.{key}]]"]
                lines += [f"{k} = {_value(v)}" for k, v in item.items()]
    return "\n".join(lines) + "\n"


def _is_tables(value: object) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(i, dict) for i in value)


def _value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"no TOML form for {value!r}")


def _string(text: str) -> str:
    """A TOML basic string: quotes, backslashes and control characters escaped."""
    out = []
    for char in text:
        if char in ('"', "\\"):
            out.append("\\" + char)
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'
