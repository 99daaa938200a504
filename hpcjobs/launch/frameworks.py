"""Framework hooks: the few variables beyond the env:// rank variables that one framework needs.

The rank variables (RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, NODE_RANK, MASTER_ADDR,
MASTER_PORT) are always set: torch.distributed's ``env://``, DeepSpeed's ``init_distributed()``
and Megatron read exactly these, and MPI ignores them. A hook runs when asked for with
``--framework NAME[,NAME]``, ``HPCJOBS_FRAMEWORK``, or through the job kind (``HPCJOBS_KIND``, set
by hpcjobs' batch templates). docs/launch.md lists what each hook sets and how a program uses it.
"""

from hpcjobs.errors import BadInput

FRAMEWORKS = ("torch", "deepspeed", "megatron", "mpi", "horovod", "vllm", "jax")
# Job kind -> hook. Kinds not listed (and no kind at all) get the plain torch/env:// variables.
KIND_HOOK = {"train": "torch", "deepspeed": "deepspeed", "megatron": "megatron", "mpi": "mpi",
             "horovod": "horovod", "vllm": "vllm", "jax": "jax"}


def select(option: str | None, env: dict) -> tuple[list[str], str]:
    """(hook names, why) from --framework, else HPCJOBS_FRAMEWORK, else HPCJOBS_KIND."""
    for field, value in (("--framework", option), ("HPCJOBS_FRAMEWORK", env.get("HPCJOBS_FRAMEWORK"))):
        if value:
            names = [n.strip().lower() for n in value.split(",") if n.strip()]
            bad = [n for n in names if n not in FRAMEWORKS]
            if bad or not names:
                raise BadInput(field, f"unknown framework {(bad or [value])[0]!r}",
                               "use one or more of " + ", ".join(FRAMEWORKS) + " (comma-separated)")
            return names, f"{field}={value}"
    kind = env.get("HPCJOBS_KIND", "")
    if kind in KIND_HOOK:
        return [KIND_HOOK[kind]], f"HPCJOBS_KIND={kind}"
    return ["torch"], "default"


def _host_port(addr: str, port: str) -> str:
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


def hooks(names: list[str], *, master_addr: str, master_port: str, world_size: int, rank: int,
          node_addr: str | None, node_name: str | None, cuda_visible: str | None) -> tuple[list, list]:
    """(variables as (key, value, why), notes) for the selected hooks; values are final ones."""
    out: list[tuple[str, str, str]] = []
    notes: list[str] = []
    for name in names:
        if name in ("torch", "deepspeed"):
            notes.append(f"{name}: env:// (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) "
                         "is all it needs" + ("; deepspeed.init_distributed() then skips its mpi4py "
                                              "discovery" if name == "deepspeed" else ""))
        elif name == "megatron":
            out.append(("CUDA_DEVICE_MAX_CONNECTIONS", "1",
                        ("megatron: one hardware work queue so that its tensor-parallel "
                         "communication is scheduled before the compute that waits for it")))
        elif name in ("mpi", "horovod"):
            notes.append(f"{name}: MPI wire-up (PMIx/PMI-2) comes from srun --mpi=pmix|pmi2; the "
                         "launcher sets no PMI/PMIX/OMPI_COMM_WORLD variable, and MPI ignores RANK & co.")
        elif name == "vllm":
            if node_addr:
                out.append(("VLLM_HOST_IP", node_addr,
                            (f"vllm: this node's ({node_name}) fast-network address from the "
                             "cluster profile, so vLLM and Ray advertise it, not the hostname's")))
            else:
                notes.append(f"vllm: VLLM_HOST_IP not set: node {node_name} has no address in the "
                             "cluster profile (vLLM then uses the hostname's address)")
        elif name == "jax":
            out.append(("JAX_COORDINATOR_ADDRESS", _host_port(master_addr, master_port),
                        "jax: read by jax.distributed.initialize(); MASTER_ADDR:MASTER_PORT"))
            out.append(("JAX_NUM_PROCESSES", str(world_size),
                        "jax: = WORLD_SIZE; pass as num_processes= (JAX itself reads SLURM_NTASKS)"))
            out.append(("JAX_PROCESS_ID", str(rank),
                        "jax: = RANK; pass as process_id= (JAX itself reads SLURM_PROCID)"))
            if cuda_visible and "," not in cuda_visible:
                out.append(("JAX_LOCAL_DEVICE_IDS", "0",
                            (f"jax: the task sees one GPU (CUDA_VISIBLE_DEVICES={cuda_visible}); "
                             "JAX would otherwise take SLURM_LOCALID as the device id")))
    return out, notes
