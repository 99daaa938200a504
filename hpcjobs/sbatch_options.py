"""The sbatch options beyond a job's shape, read the way Slurm reads them, before Slurm sees them.

Memory sizes (``--mem``, ``--mem-per-gpu``), host lists (``--nodelist``, ``--exclude``), the
times of ``--begin``/``--deadline``, mail types, GRES, feature expressions and the pass-through
``--sbatch-arg``. Each reader raises :class:`BadInput` naming the option and the fix, so that a
value Slurm would refuse (exit 3) or, worse, accept and never run, stops here with exit 2.
spec.validate calls these; docs/sbatch-options.md lists the options.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from hpcjobs.errors import BadInput

# --- memory: Slurm's str_to_mbytes (src/common/proc_args.c): digits and one of K M G T
# (case-insensitive, powers of 1024, default M); K rounds up to whole megabytes.
_MEM = re.compile(r"^(\d+)([KMGTkmgt]?)$")
_MEM_FACTOR = {"": 1, "k": 1 / 1024, "m": 1, "g": 1024, "t": 1024 * 1024}


def memory_mb(fld: str, text: str) -> int:
    """Megabytes of a Slurm memory size ("64G", "512M", "2048", "1T")."""
    m = _MEM.match(text.strip())
    if not m:
        raise BadInput(fld, f"{text!r} is not a Slurm memory size",
                       "write a number with K, M, G or T (powers of 1024, default M), e.g. 64G")
    n, unit = int(m.group(1)), m.group(2).lower()
    return -(-n // 1024) if unit == "k" else int(n * _MEM_FACTOR[unit])


# --- host lists, with python-hostlist (Slurm's order, Slurm's syntax) --------------------

def hosts(fld: str, text: str) -> list[str]:
    """The node names of a Slurm host list ("node[1-3],gpu07"), in order, each once."""
    import hostlist

    if not text.strip() or any(c.isspace() for c in text):
        raise BadInput(fld, f"{text!r} is not a Slurm host list", "write e.g. node[1-3],node7")
    try:
        names = hostlist.expand_hostlist(text)
    except hostlist.BadHostlist as e:
        raise BadInput(fld, f"{text!r} is not a Slurm host list ({e})",
                       "write e.g. node[1-3],node7") from None
    return names


# --- begin / deadline times: Slurm's parse_time (src/common/parse_time.c) -----------------
# Forms: today, tomorrow, midnight, noon, elevenses (11:00), fika (15:00), teatime (16:00);
# HH:MM[:SS] [AM|PM]; MMDD[YY], MM/DD[/YY], MM.DD[.YY]; MM/DD[/YY]-HH:MM[:SS];
# YYYY-MM-DD[THH:MM[:SS]]; now[{+|-}COUNT[seconds|minutes|hours|days|weeks]]. A time without
# a date is the next such time; a date without a year is the next such date.

_NAMED_HOURS = {"midnight": 0, "noon": 12, "elevenses": 11, "fika": 15, "teatime": 16}
_UNITS = (("seconds", 1), ("second", 1), ("minutes", 60), ("minute", 60), ("hours", 3600),
          ("hour", 3600), ("days", 86400), ("day", 86400), ("weeks", 604800), ("week", 604800))
_CLOCK = re.compile(r"(\d{1,2}):(\d{2})(?::(\d{2}))?\s*(am|pm)?", re.I)
_ISO_DATE = re.compile(r"(\d{4})-(\d{1,2})-(\d{1,2})")
_DATE = re.compile(r"(\d{1,2})[./]?(\d{1,2})(?:[./]?(\d{2}))?")
_NOW = re.compile(r"now\s*(?:([+-])\s*(\d+)\s*([a-z]*))?", re.I)
TIME_FORMS = ("now+1hour, 16:00, tomorrow, 2026-12-24T08:00, 12/24-08:00 "
              "(Slurm's forms; see sbatch --begin)")


def slurm_time(fld: str, text: str, now: datetime | None = None) -> datetime:
    """The moment a ``--begin``/``--deadline`` value names, read as Slurm's parse_time does."""
    now = (now or datetime.now()).replace(microsecond=0)
    bad = BadInput(fld, f"{text!r} is not a Slurm time", f"use e.g. {TIME_FORMS}")
    s, i = text.strip(), 0
    if not s or "\n" in s:
        raise bad
    date = clock = None
    moment = None
    while i < len(s):
        c = s[i]
        if c.isspace() or c in "-T":
            i += 1
            continue
        low = s[i:].lower()
        word = next((w for w in ("today", "tomorrow", *_NAMED_HOURS) if low.startswith(w)), None)
        if word == "today":
            date, i = now.date(), i + 5
        elif word == "tomorrow":
            date, i = (now + timedelta(days=1)).date(), i + 8
        elif word:
            clock, i = (_NAMED_HOURS[word], 0, 0), i + len(word)
        elif low.startswith("now"):
            m = _NOW.match(s, i)
            delta = 0
            if m.group(1):
                unit = m.group(3).lower()
                factor = next((f for name, f in _UNITS if unit == name), None) if unit else 1
                if factor is None:
                    raise bad
                delta = int(m.group(2)) * factor * (-1 if m.group(1) == "-" else 1)
            moment = now + timedelta(seconds=delta)
            date, clock = moment.date(), (moment.hour, moment.minute, moment.second)
            i = m.end()
        elif c.isdigit():
            m = _CLOCK.match(s, i) if (s[i + 1:i + 2] == ":" or s[i + 2:i + 3] == ":") else None
            if m:
                h, mi, sec = int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)
                ampm = (m.group(4) or "").lower()
                if ampm == "pm":
                    h = 12 if h == 12 else h + 12
                elif ampm == "am" and h == 12:
                    h = 0
                if h > 23 or mi > 59 or sec > 59 or (ampm and int(m.group(1)) > 12):
                    raise bad
                clock, i = (h, mi, sec), m.end()
                continue
            m = _ISO_DATE.match(s, i)
            if m:
                y, mo, d = (int(g) for g in m.groups())
            else:
                m = _DATE.match(s, i)
                if not m:
                    raise bad
                mo, d = int(m.group(1)), int(m.group(2))
                y = 2000 + int(m.group(3)) if m.group(3) else None
            if not (1 <= mo <= 12 and 1 <= d <= 31):
                raise bad
            if y is None:  # the next such date
                y = now.year
                if (mo, d) < (now.month, now.day):
                    y += 1
            try:
                date = datetime(y, mo, d).date()
            except ValueError:
                raise bad from None
            i = m.end()
        else:
            raise bad
    if date is None and clock is None:
        raise bad
    if clock is None:
        clock = (0, 0, 0)
    if date is None:  # a time alone: today if still to come, else tomorrow
        date = now.date()
        if clock <= (now.hour, now.minute, now.second):
            date += timedelta(days=1)
    return datetime(date.year, date.month, date.day, *clock)


# --- mail, GRES, features, names ----------------------------------------------------------

# sbatch(1) --mail-type.
MAIL_TYPES = ("NONE", "BEGIN", "END", "FAIL", "REQUEUE", "ALL", "INVALID_DEPEND", "STAGE_OUT",
              "TIME_LIMIT", "TIME_LIMIT_90", "TIME_LIMIT_80", "TIME_LIMIT_50", "ARRAY_TASKS")


def mail_types(text: str) -> list[str]:
    items = [t.strip().upper() for t in text.split(",")]
    for t in items:
        if t not in MAIL_TYPES:
            raise BadInput("--mail-type", f"{t or text!r} is not a Slurm mail type",
                           f"use a comma list of {', '.join(MAIL_TYPES)}")
    return items


@dataclass(frozen=True)
class Gres:
    name: str
    type: str | None
    count: str  # as written: "1", "10G"


# name[:type][:count]; Slurm reads a last part made of digits (and a size suffix) as the count.
_GRES = re.compile(r"^([A-Za-z][A-Za-z0-9_]*)(?::([A-Za-z0-9_.-]+))?(?::(\d+[KMGTkmgt]?))?$")


def gres(text: str) -> list[Gres]:
    """The items of a ``--gres`` value ("gpu:v100s:1,nvme:1")."""
    out = []
    for item in text.split(","):
        m = _GRES.match(item.strip())
        if not m:
            raise BadInput("--gres", f"{item!r} is not a GRES request",
                           "write NAME[:TYPE][:COUNT] items, comma-separated, e.g. gpu:v100s:1")
        name, typ, count = m.groups()
        if count is None and typ is not None and re.fullmatch(r"\d+[KMGTkmgt]?", typ):
            typ, count = None, typ
        out.append(Gres(name, typ, count or "1"))
    return out


# Feature expressions (sbatch --constraint): names joined by & | , with [..], (..) and *COUNT.
_CONSTRAINT = re.compile(r"^[A-Za-z0-9_.+\-=&|,*\[\]()!:]+$")
_FEATURE = re.compile(r"[A-Za-z_][A-Za-z0-9_.+\-=:]*")


def constraint_features(text: str) -> list[str]:
    if not _CONSTRAINT.match(text):
        raise BadInput("--constraint", f"{text!r} is not a Slurm feature expression",
                       "write feature names joined by & (and) or | (or), e.g. ib&v100s")
    return _FEATURE.findall(text)


_NAME_LIST = re.compile(r"^[A-Za-z0-9_.+-]+(,[A-Za-z0-9_.+-]+)*$")


def name_list(fld: str, text: str, what: str) -> list[str]:
    if not _NAME_LIST.match(text):
        raise BadInput(fld, f"{text!r} is not a {what}", "use letters, digits and _ . + -, "
                       "comma-separated")
    return text.split(",")


# --- pass-through: --sbatch-arg=--foo=bar --------------------------------------------------

# What hpcjobs writes itself or takes as a first-class option (sbatch's long name -> the
# hpcjobs option that sets it). A pass-through of one of these would fight the rendered
# line (sbatch keeps the last one).
MANAGED = {
    "nodes": "--nodes", "ntasks-per-node": "--ntasks-per-node", "ntasks": "--ntasks-per-node",
    "gres": "--gres / --gpus-per-node", "gpus-per-node": "--gpus-per-node",
    "gpus": "--gpus-per-node", "cpus-per-task": "--cpus-per-task", "time": "--time",
    "partition": "--partition", "job-name": "--job-name", "account": "--account", "qos": "--qos",
    "output": "--output-dir", "array": "--array", "dependency": "--after",
    "kill-on-invalid-dep": "--after", "signal": "--signal / --signal-seconds",
    "requeue": "--requeue", "no-requeue": "--no-requeue", "open-mode": "(always append)",
    "chdir": "--chdir", "mem": "--mem", "mem-per-gpu": "--mem-per-gpu",
    "mem-per-cpu": "--mem / --mem-per-gpu", "exclusive": "--exclusive",
    "constraint": "--constraint", "exclude": "--exclude", "nodelist": "--nodelist",
    "reservation": "--reservation", "mail-type": "--mail-type", "mail-user": "--mail-user",
    "comment": "--comment", "begin": "--begin", "deadline": "--deadline",
    "export": "--env / --env-pass", "wrap": "(the script is hpcjobs')",
}
_ARG = re.compile(r"^--([a-z][a-z0-9-]*)(?:=(.*))?$", re.S)


def sbatch_arg(text: str) -> tuple[str, str | None]:
    """(long name, value or None) of one ``--sbatch-arg`` value, refused where hpcjobs owns it."""
    m = _ARG.match(text)
    if not m:
        raise BadInput("--sbatch-arg", f"{text!r} is not a long sbatch option",
                       "write it as --sbatch-arg=--name=value (or --sbatch-arg=--flag)")
    name, value = m.group(1), m.group(2)
    if name in MANAGED:
        ours = MANAGED[name]
        fix = f"use hpcjobs' {ours}" if ours.startswith("--") else "drop it"
        raise BadInput("--sbatch-arg", f"--{name} is set by hpcjobs {ours}", fix)
    # sbatch's getopt_long takes an unambiguous prefix as the whole name (--nodel = --nodelist)
    longer = sorted(k for k in MANAGED if k.startswith(name))
    if longer:
        raise BadInput("--sbatch-arg", f"--{name} is an abbreviation sbatch may read as "
                       f"--{longer[0]}", f"write the option's full name (or use hpcjobs' "
                       f"{MANAGED[longer[0]]})")
    if value is not None and ("\n" in value or "\r" in value or "\0" in value):
        raise BadInput("--sbatch-arg", f"--{name}'s value holds a line break or NUL", "remove it")
    return name, value
