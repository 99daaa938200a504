"""What ``hpcjobs doctor`` reports: one :class:`Check` per question (pass / warn / fail / skip,
the evidence seen, the fix) and the :class:`Report` that adds them up to a verdict. Data only."""

from __future__ import annotations

from dataclasses import dataclass

from hpcjobs.outcome import FAIL, PASS, SKIP, WARN  # noqa: F401 (re-exported)
# One Check for the doctor and the preflight step (job side, so the preflight can use it).
from hpcjobs.runners.checks import Check


@dataclass
class Report:
    host: str
    node: str | None
    cluster: str
    profile: str
    fabric: str  # the one-line fabric verdict
    checks: list[Check]

    @property
    def failures(self) -> int:
        return sum(c.status == FAIL for c in self.checks)

    @property
    def warnings(self) -> int:
        return sum(c.status == WARN for c in self.checks)

    @property
    def ok(self) -> bool:
        return self.failures == 0

    @property
    def verdict(self) -> str:
        tail = f"{self.failures} failure(s), {self.warnings} warning(s)"
        return f"{self.fabric}; {tail}"

    def to_dict(self) -> dict:
        return {"host": self.host, "node": self.node, "cluster": self.cluster,
                "profile": self.profile, "ok": self.ok, "failures": self.failures,
                "warnings": self.warnings, "fabric": self.fabric, "verdict": self.verdict,
                "checks": [c.to_dict() for c in self.checks]}

    def text(self) -> str:
        head = (f"hpcjobs doctor on {self.host} (node {self.node or '-'}, cluster {self.cluster}, "
                f"profile {self.profile})")
        lines = [head]
        for c in self.checks:
            lines.append(f"{c.status.upper():<5} {c.name:<22} {c.summary}")
            if c.status != PASS or len(c.evidence) > 0:
                for e in c.evidence:
                    lines.append(f"{'':<6}  seen: {e}")
            if c.fix and c.status in (WARN, FAIL):
                lines.append(f"{'':<6}  fix:  {c.fix}")
        lines.append(f"verdict: {self.verdict}")
        return "\n".join(lines)
