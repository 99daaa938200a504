"""One doctor run: every check, in order, on one host against the cluster profile."""

from __future__ import annotations

from hpcjobs.doctor.context import Context, identify, local_addresses
from hpcjobs.doctor.environment import check_environment
from hpcjobs.doctor.fabric import (check_gdr, check_gpu_nic, check_interface, check_rdma,
                                   fabric_verdict, rdma_ports)
from hpcjobs.doctor.host import Host
from hpcjobs.doctor.node import check_memlock, check_munge, check_slurm_node, check_slurmctld
from hpcjobs.doctor.result import FAIL, Report

CHECK_NAMES = ("rdma", "interface", "gpudirect-rdma", "gpu-nic-path", "memlock", "munge",
               "slurmctld", "slurm-node", "environment")


def diagnose(cluster, host: Host | None = None, *, node_name: str | None = None) -> Report:
    """Run every check on ``host`` (default: this machine) against the cluster profile."""
    host = host or Host.real()
    ports = rdma_ports(host)
    addresses, source = local_addresses(host)
    node, slurm_name = identify(host, cluster, addresses)
    if node_name:
        node, slurm_name = cluster.node(node_name), node_name
    ctx = Context(host, cluster, node, slurm_name, ports, addresses, source)
    gdr = check_gdr(ctx)
    ctld = check_slurmctld(ctx)
    checks = [check_rdma(ctx), check_interface(ctx), gdr, check_gpu_nic(ctx), check_memlock(ctx),
              check_munge(ctx), ctld, check_slurm_node(ctx, ctld.status == FAIL),
              *check_environment(ctx)]
    return Report(host=host.hostname, node=node.name if node else None, cluster=cluster.name,
                  profile=cluster.source, fabric=fabric_verdict(ctx, gdr), checks=checks)
