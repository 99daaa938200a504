"""Environment checks: NCCL / UCX / Open MPI variables that contradict NCCL's and Open MPI's own
rules or this node's fabric (the old guide's settings, debug left on, devices the node does not
have). The sources: NCCL src/transport/net_ib (GID index only on RoCE, NCCL_IB_DISABLE default
0, NCCL_IB_HCA syntax), NCCL's environment docs (NCCL_DEBUG), docs.open-mpi.org v5.0.x (no openib
BTL, no vader)."""

from __future__ import annotations

from hpcjobs.doctor.context import Context
from hpcjobs.doctor.result import FAIL, PASS, WARN, Check
from hpcjobs.launch.fabric import Port, ipv4_mapped
from hpcjobs.runners.fabric_truth import hca_devices


def check_environment(ctx: Context) -> list[Check]:
    """Variables that contradict the sources above (the old guide's settings, debug left on)."""
    env, out = ctx.host.env, []
    port = ctx.usable_port
    native_ib = port is not None and port.link_layer == "InfiniBand"
    if "NCCL_IB_GID_INDEX" in env and native_ib:
        out.append(Check("env:NCCL_IB_GID_INDEX", WARN,
                         f"NCCL_IB_GID_INDEX={env['NCCL_IB_GID_INDEX']} on native InfiniBand: NCCL "
                         "ignores it (GID index 0); it only matters on RoCE",
                         [f"{port.name} link layer InfiniBand"], "unset NCCL_IB_GID_INDEX"))
    elif "NCCL_IB_GID_INDEX" in env and port is not None and port.link_layer == "Ethernet":
        out.append(_check_gid(ctx, port, env["NCCL_IB_GID_INDEX"]))
    ib = env.get("NCCL_IB_DISABLE")
    if ib is not None and ib.strip() == "0":
        out.append(Check("env:NCCL_IB_DISABLE", WARN, "NCCL_IB_DISABLE=0 is a no-op (0 is the default)",
                         ["NCCL_IB_DISABLE=0"], "unset it; it suggests IB is forced on when it is not"))
    elif ib is not None and ib.strip() == "1" and port is not None:
        out.append(Check("env:NCCL_IB_DISABLE", FAIL, f"NCCL_IB_DISABLE=1 forces TCP sockets although "
                         f"{port.name} is ACTIVE", [f"NCCL_IB_DISABLE={ib}"], "unset NCCL_IB_DISABLE"))
    dbg = env.get("NCCL_DEBUG", "")
    if dbg.upper() in ("INFO", "TRACE"):
        out.append(Check("env:NCCL_DEBUG", WARN, f"NCCL_DEBUG={dbg} left on: megabytes of log per "
                         "job and slower start-up", [f"NCCL_DEBUG={dbg}"],
                         "NCCL_DEBUG=WARN for normal runs; hpcjobs submit --nccl-debug for one job"))
    for var in ("OMPI_MCA_btl", "OMPI_MCA_btl_base_include"):
        v = env.get(var, "")
        parts = [p.strip() for p in v.lstrip("^").split(",")]
        if "openib" in parts and not v.startswith("^"):
            out.append(Check(f"env:{var}", FAIL, f"{var}={v}: the openib BTL is gone in Open MPI 5 "
                             "(deprecated in 4)", [f"{var}={v}"],
                             "unset it; use OMPI_MCA_pml=ucx (UCX_NET_DEVICES=dev:port) or srun "
                             "--mpi=pmix"))
        elif "vader" in parts and not v.startswith("^"):
            out.append(Check(f"env:{var}", WARN, f"{var}={v}: vader is called sm in Open MPI 5",
                             [f"{var}={v}"], "write sm, or leave the BTL choice to Open MPI"))
    for var, dev_of in (("NCCL_IB_HCA", hca_devices), ("UCX_NET_DEVICES", _ucx_devices)):
        if var in env and ctx.ports:
            names = {p.dev for p in ctx.ports}
            missing = [d for d in dev_of(env[var]) if d not in names]
            if missing:
                out.append(Check(f"env:{var}", FAIL, f"{var}={env[var]} names {', '.join(missing)}, "
                                 "which this node does not have",
                                 [f"RDMA devices: {', '.join(sorted(names))}"],
                                 f"unset {var} (hpcjobs.launch sets it from sysfs) or fix it"))
    if not out:
        seen = sorted(k for k in env if k.startswith(("NCCL_", "UCX_", "OMPI_MCA_")))
        out.append(Check("environment", PASS, "no NCCL/UCX/MPI variable contradicts the fabric",
                         [f"set: {', '.join(seen)}" if seen else "none set"]))
    return out


def _ucx_devices(value: str) -> list[str]:
    return [item.split(":")[0] for item in value.split(",")
            if item and item != "all" and ":" in item]


def _check_gid(ctx: Context, port: Port, index: str) -> Check:
    base = f"class/infiniband/{port.dev}/ports/{port.port}"
    gid = ctx.host.read(f"{base}/gids/{index}")
    typ = ctx.host.read(f"{base}/gid_attrs/types/{index}")
    evidence = [f"gids/{index}: {gid}", f"gid_attrs/types/{index}: {typ}"]
    if gid and typ == "RoCE v2" and ipv4_mapped(gid):
        return Check("env:NCCL_IB_GID_INDEX", PASS, f"NCCL_IB_GID_INDEX={index}: RoCE v2, IPv4",
                     evidence)
    return Check("env:NCCL_IB_GID_INDEX", FAIL, f"NCCL_IB_GID_INDEX={index} is not a RoCE v2 IPv4 "
                 f"GID on {port.name}", evidence,
                 "unset it (hpcjobs.launch picks the RoCE v2 IPv4 GID) or pick that index")
