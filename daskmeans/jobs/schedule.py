"""Cron schedules: validation, and the same schedule as systemd's ``OnCalendar=``.

A job's ``schedule`` is a cron expression. Only what both cron and systemd read
the same way is accepted: cron runs a job when the day of the month OR the
weekday matches (if both are restricted), systemd when both do, so a schedule
restricting both is refused rather than rendered with two meanings.
"""

from __future__ import annotations

import re

from ..errors import InputError

CRON_MACROS = {"@hourly": "hourly", "@daily": "daily", "@midnight": "daily", "@weekly": "weekly",
               "@monthly": "monthly", "@yearly": "yearly", "@annually": "yearly"}
_DOW = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
_FIELD = re.compile(r"^(\*|\d+(-\d+)?)(/\d+)?$")
#: minute, hour, day of month, month, weekday: the allowed numbers of each field
_RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))
_NAMES = ("minute", "hour", "day of month", "month", "weekday")


def _numbers_ok(field: str, lo: int, hi: int) -> bool:
    for item in field.split(","):
        rng, _, step = item.partition("/")
        if step and int(step) < 1:
            return False
        if rng != "*":
            a, _, b = rng.partition("-")
            if not (lo <= int(a) <= hi and (not b or int(a) <= int(b) <= hi)):
                return False
    return True


def cron_fields(expr: str, where) -> list[str] | None:
    """Validate a cron expression; its 5 fields, or None for an ``@macro``.

    ``where`` names the spec in messages.
    """
    expr = expr.strip()
    if expr in CRON_MACROS:
        return None
    parts = expr.split()
    if len(parts) != 5 or not all(all(_FIELD.match(x) for x in p.split(",")) for p in parts):
        raise InputError(f"job spec {where}: schedule {expr!r} is not a cron expression "
                         f"(5 fields: minute hour day month weekday, e.g. \"0 2 * * *\", or @daily)")
    for part, (lo, hi), name in zip(parts, _RANGES, _NAMES):
        if not _numbers_ok(part, lo, hi):
            raise InputError(f"job spec {where}: schedule {expr!r}: {name} {part!r} is outside {lo}-{hi}; "
                             f"write a {name} from {lo} to {hi}")
    if parts[2] != "*" and parts[4] != "*":
        raise InputError(
            f"job spec {where}: schedule {expr!r} restricts both the day of month and the weekday, which cron "
            f"reads as either and systemd as both; restrict one of them (e.g. \"{' '.join(parts[:4])} *\")")
    return parts


def _convert(expr: str, f: str, pad: bool, step_start: str) -> str:
    out = []
    for x in f.split(","):
        rng, _, step = x.partition("/")
        if rng == "*":
            out.append(f"{step_start}/{step}" if step else "*")
            continue
        a, _, b = rng.partition("-")
        fmt = (lambda v: f"{int(v):02d}") if pad else (lambda v: str(int(v)))
        s = fmt(a) + (f"..{fmt(b)}" if b else "")
        if step:
            if b:
                raise InputError(f"schedule {expr!r}: a stepped range ({x}) has no systemd equivalent; "
                                 f"write OnCalendar= by hand")
            s += f"/{step}"
        out.append(s)
    return ",".join(out)


def cron_to_oncalendar(expr: str) -> str:
    """A cron expression as systemd's ``OnCalendar=`` (numbers, lists, ranges and ``*/n`` steps)."""
    parts = cron_fields(expr, "schedule")
    if parts is None:
        return CRON_MACROS[expr.strip()]
    minute, hour, dom, month, dow = parts
    days = ""
    if dow != "*":
        names = []
        for x in dow.split(","):
            if "/" in x:
                raise InputError(f"schedule {expr!r}: weekday steps have no systemd equivalent; write OnCalendar= by hand")
            a, _, b = x.partition("-")
            names.append(_DOW[int(a) % 8] + (f"..{_DOW[int(b) % 8]}" if b else ""))
        days = ",".join(names) + " "
    date = f"*-{_convert(expr, month, True, '01')}-{_convert(expr, dom, True, '01')}"
    return f"{days}{date} {_convert(expr, hour, True, '00')}:{_convert(expr, minute, True, '00')}:00"
