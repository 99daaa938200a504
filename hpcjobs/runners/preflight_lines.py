"""The preflight's wire: the node tasks' reports, through srun's stdout, to the decide step.

The node tasks print their reports on stdout; the job script captures the step's stdout into a
file on the batch node (no shared filesystem needed) and the decide step reads it. srun forwards
task output in pieces of about a kilobyte, so the lines of several tasks can interleave within a
long line (seen with three 3 KB reports): a report goes as short lines, each whole on its own,
``HPCJOBS-PREFLIGHT <id> <i>/<n> <piece>``, joined again by id. A report with a piece missing (a
task killed while writing) is dropped.
"""

from __future__ import annotations

import json
import os
import sys

MARK = "HPCJOBS-PREFLIGHT "
FAILED_EXIT = 3  # a node task that found a failure (srun's --kill-on-bad-exit ends the others)
PREFLIGHT_EXIT = 78  # the job ends: a node failed the preflight (sysexits' EX_CONFIG)
REQUEUED_EXIT = 79  # decide requeued the job with the bad nodes excluded


PIECE = 600  # characters of JSON per line: well under srun's pieces


def emit(record: dict) -> None:
    """Write one report as whole short lines, in one write (one flush)."""
    text = json.dumps(record, sort_keys=True)
    rid = f"{record.get('node', '?')}.{record.get('rank', '?')}.{record.get('phase', '?')}.{os.getpid()}"
    parts = [text[i:i + PIECE] for i in range(0, len(text), PIECE)] or [""]
    sys.stdout.write("".join(f"{MARK}{rid} {k + 1}/{len(parts)} {p}\n" for k, p in enumerate(parts)))
    sys.stdout.flush()


def parse_reports(lines) -> list[dict]:
    """The reports whose pieces all arrived, in the order their first piece came."""
    pieces: dict[str, dict[int, str]] = {}
    total: dict[str, int] = {}
    for line in lines:
        i = line.find(MARK)
        if i < 0:
            continue
        head = line[i + len(MARK):].rstrip("\n").split(" ", 2)
        if len(head) < 2:
            continue
        rid, pos = head[0], head[1]
        k, _, n = pos.partition("/")
        if not (k.isdigit() and n.isdigit()):
            continue
        pieces.setdefault(rid, {})[int(k)] = head[2] if len(head) > 2 else ""
        total[rid] = int(n)
    out = []
    for rid, got in pieces.items():
        if len(got) != total[rid]:
            continue  # a task killed while writing
        try:
            out.append(json.loads("".join(got[k] for k in range(1, total[rid] + 1))))
        except (ValueError, KeyError):
            continue
    return out


def read_reports(path: str) -> list[dict]:
    try:
        with open(path, errors="replace") as f:
            return parse_reports(f)
    except OSError:
        return []
