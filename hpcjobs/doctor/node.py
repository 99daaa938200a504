"""Node checks: locked-memory limit, munge, slurmctld, and this node as Slurm sees it."""

from __future__ import annotations

import re

from hpcjobs.doctor.context import Context
from hpcjobs.doctor.parse import tail
from hpcjobs.doctor.result import FAIL, PASS, SKIP, WARN, Check
# The memlock rule is the job side's, shared with the preflight step.
from hpcjobs.runners.checks import memlock_check


def check_memlock(ctx: Context) -> Check:
    soft, hard = ctx.host.memlock
    return memlock_check(soft, hard, "SLURM_JOB_ID" in ctx.host.env, ctx.usable_port is not None)


def check_munge(ctx: Context) -> Check:
    run = ctx.host.run
    cred = run(["munge", "-n"], None)
    if cred.rc == 127:
        return Check("munge", FAIL, "munge is not installed", tail(cred.text),
                     "apt install munge; copy /etc/munge/munge.key from the controller")
    if cred.rc != 0:
        return Check("munge", FAIL, "munge cannot make a credential (is munged running?)",
                     tail(cred.text), "start munged (as the munge user); check /run/munge")
    dec = run(["unmunge"], cred.out)
    status = next((ln.strip() for ln in dec.out.splitlines() if ln.startswith("STATUS:")), dec.text)
    if dec.rc != 0 or "Success" not in status:
        return Check("munge", FAIL, f"unmunge refused this host's credential: {status}",
                     tail(dec.text),
                     "same /etc/munge/munge.key on every node, clocks in sync (chrony), munged "
                     "restarted after a key change")
    return Check("munge", PASS, "munge -n | unmunge: Success", [status])


def check_slurmctld(ctx: Context) -> Check:
    r = ctx.host.run(["scontrol", "ping"], None)
    if r.rc == 127:
        return Check("slurmctld", FAIL, "scontrol not found", tail(r.text),
                     "install the Slurm client (slurm-client)")
    text = r.text
    if r.rc == 0 and re.search(r"\bis UP\b", text) and "DOWN" not in text:
        return Check("slurmctld", PASS, "slurmctld reachable", [text.splitlines()[0]])
    return Check("slurmctld", FAIL, "slurmctld not reachable", tail(text),
                 "check slurmctld on the controller (SlurmctldHost) and that this host resolves "
                 "and reaches it (port 6817); munge errors also show here")


def check_slurm_node(ctx: Context, controller_down: bool = False) -> Check:
    # The scontrol -o key=value reader of the Slurm backend (values may hold blanks).
    from hpcjobs.slurm import parse_kv

    name = ctx.slurm_name
    r = ctx.host.run(["scontrol", "-o", "show", "node", name], None)
    in_profile = ctx.node is not None or "SLURMD_NODENAME" in ctx.host.env
    if r.rc == 127:
        return Check("slurm-node", SKIP, "scontrol not found")
    if controller_down:
        return Check("slurm-node", SKIP, "slurmctld not reachable: cannot ask about this node")
    if r.rc != 0 or "NodeName=" not in r.out:
        if not in_profile:
            return Check("slurm-node", SKIP, f"{name} is not a Slurm node (a login host?)",
                         tail(r.text), "run it on a compute node: srun -N1 hpcjobs doctor")
        return Check("slurm-node", FAIL, f"Slurm does not know node {name}", tail(r.text),
                     "add it to slurm.conf (NodeName=...) and restart slurmctld/slurmd")
    kv = parse_kv(r.out.strip().splitlines()[0])
    state = kv.get("State", "?")
    gres = kv.get("Gres", "(null)")
    evidence = [" ".join(f"{k}={kv.get(k, '?')}" for k in ("NodeName", "State", "Gres", "CPUTot",
                                                             "RealMemory"))]
    if kv.get("Reason"):
        evidence.append(f"Reason={kv['Reason']}")
    flags = set(re.split(r"[+*]", state))
    bad = flags & {"DOWN", "DRAIN", "DRAINED", "DRAINING", "FAIL", "INVAL", "NOT_RESPONDING",
                   "POWERED_DOWN", "UNKNOWN"} or ({"NOT_RESPONDING"} if "*" in state else set())
    if bad:
        return Check("slurm-node", FAIL, f"node {name} is {state}", evidence,
                     f"read Reason above; after fixing: scontrol update nodename={name} state=resume")
    node = ctx.node
    if node is not None and node.gpu is not None:
        want = f"gpu:{node.gpu.type}:{node.gpu.count}"
        have = [g.split("(")[0] for g in gres.split(",")]
        if want not in have:
            return Check("slurm-node", FAIL, f"node {name} has Gres={gres}, the profile says {want}",
                         evidence, "make slurm.conf NodeName Gres= and gres.conf match the profile "
                         "(the type must match the NVML name: slurmd -G)")
    elif node is not None and gres not in ("(null)", "", "None"):
        return Check("slurm-node", WARN, f"node {name} has Gres={gres}, the profile lists no GPU",
                     evidence, "add [nodes.gpu] to the profile")
    return Check("slurm-node", PASS, f"node {name} {state}, Gres={gres}", evidence)
