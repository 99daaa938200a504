"""Spec validation: each mistake is one line naming the option and the fix."""

import pytest

from dataclasses import replace
from datetime import datetime

from hpcjobs.cluster import builtin
from hpcjobs.errors import BadInput
from hpcjobs.spec import JobSpec, dependency, parse_array, validate

OK = dict(kind="mpi", program=["true"])

BAD = [
    ({"nodes": 4}, "--nodes", "use --nodes 3 or fewer"),
    ({"nodes": 0}, "--nodes", "at least 1"),
    ({"nodes": -2}, "--nodes", "at least 1"),
    ({"gpus_per_node": 2}, "--gpus-per-node", "or fewer"),
    ({"gpus_per_node": -1}, "--gpus-per-node", "negative"),
    ({"ntasks_per_node": 0}, "--ntasks-per-node", "at least 1"),
    ({"ntasks_per_node": 999}, "--ntasks-per-node", "or fewer"),
    ({"cpus_per_task": 0}, "--cpus-per-task", "at least 1"),
    ({"cpus_per_task": 33}, "--cpus-per-task", "exceeds"),
    ({"time": "abc"}, "--time", "not a Slurm time"),
    ({"time": "1:2:3:4"}, "--time", "not a Slurm time"),
    ({"time": "-5"}, "--time", "not a Slurm time"),
    ({"partition": "nope"}, "--partition", "use one of: gpu"),
    ({"job_name": ""}, "--job-name", "non-empty"),
    ({"job_name": "a\nb"}, "--job-name", "one non-empty line"),
    ({"job_name": "a\0b"}, "--job-name", "NUL"),
    ({"account": "a b"}, "--account", "not a Slurm name"),
    ({"qos": "x;y"}, "--qos", "not a Slurm name"),
    ({"env": {"1BAD": "x"}}, "--env", "not a variable name"),
    ({"env": {"A-B": "x"}}, "--env", "not a variable name"),
    ({"env": {"A": "x\0y"}}, "--env A", "NUL"),
    ({"env_pass": ["NOT_SET_ANYWHERE_XYZ"]}, "--env-pass", "not set"),
    ({"env_pass": ["bad name"]}, "--env-pass", "not a variable name"),
    ({"output_dir": ""}, "--output-dir", "one-line path"),
    ({"output_dir": "a\nb"}, "--output-dir", "one-line path"),
    ({"chdir": "/does/not/exist"}, "--chdir", "not a directory"),
    ({"array": "1-"}, "--array", "not a Slurm array spec"),
    ({"array": "a-b"}, "--array", "not a Slurm array spec"),
    ({"array": "1-5%"}, "--array", "not a Slurm array spec"),
    # issue 11: refused by slurmctld (exit 3) before; now here, naming the item
    ({"array": "5-1"}, "--array", "the range 5-1 ends before it starts; write 1-5"),
    ({"array": "0-99:0"}, "--array", "the step of 0-99:0 must be at least 1"),
    ({"array": "1,7-3:2%4"}, "--array", "write 3-7:2"),
    ({"array": "0-9%x"}, "--array", "the throttle after % must be a number"),
    # issue 11: above the partition's MaxTime (or no limit at all) pends for ever
    ({"time": "3-00:00:00"}, "--time", "above the MaxTime 2-00:00:00 of partition 'gpu'"),
    ({"time": "2-12:00"}, "--time", "use --time 2-00:00:00 or less"),
    ({"time": "0"}, "--time", "0 means no time limit, but partition 'gpu' allows at most 2-00:00:00"),
    ({"time": "UNLIMITED"}, "--time", "would pend for ever"),
]

# issue 11, point 5: sbatch's own options, each refused in the form Slurm would refuse (or,
# worse, accept and never run)
BAD_SBATCH = [
    ({"mem": "64GB"}, "--mem", "not a Slurm memory size"),
    ({"mem": "200000"}, "--mem", "more than the 191000 MB (RealMemory)"),
    ({"mem": "1T"}, "--mem", "use --mem 191000M or less"),
    ({"mem": "1G", "mem_per_gpu": "1G"}, "--mem", "one of --mem and --mem-per-gpu"),
    ({"mem_per_gpu": "8G", "gpus_per_node": 0}, "--mem-per-gpu", "asks for no GPU"),
    ({"mem_per_gpu": "200G"}, "--mem-per-gpu", "RealMemory"),
    ({"exclude": "pve9"}, "--exclude", "no node 'pve9' in cluster 'pve'"),
    ({"exclude": "pve[1-3]"}, "--exclude", "excludes every node"),
    ({"exclude": "pve[1-"}, "--exclude", "not a Slurm host list"),
    ({"exclude": "pve3", "nodes": 3}, "--nodes", "use --nodes 2 or fewer"),
    ({"nodelist": "node1"}, "--nodelist", "is not a node of partition 'gpu'"),
    ({"nodelist": "pve[1-3]", "nodes": 2}, "--nodelist", "use --nodes 3 or name fewer"),
    ({"nodelist": "pve1", "exclude": "pve1"}, "--nodelist", "also in --exclude"),
    ({"constraint": "a b"}, "--constraint", "not a Slurm feature expression"),
    ({"reservation": "my;res"}, "--reservation", "not a reservation name"),
    ({"mail_type": "END,SOMETIMES"}, "--mail-type", "'SOMETIMES' is not a Slurm mail type"),
    ({"mail_user": "me@example.org"}, "--mail-user", "add e.g. --mail-type END,FAIL"),
    ({"mail_user": "a@b c@d", "mail_type": "END"}, "--mail-user", "not one address"),
    ({"gres": "gpu:2", "gpus_per_node": 1}, "--gres", "--gpus-per-node is 1"),
    ({"gres": "gpu:2"}, "--gpus-per-node", "or fewer"),
    ({"gres": "nvme 1"}, "--gres", "not a GRES request"),
    ({"comment": "x" * 1025}, "--comment", "at most 1024"),
    ({"comment": "a\nb"}, "--comment", "one-line"),
    ({"begin": "sometime"}, "--begin", "not a Slurm time"),
    ({"begin": "25:00"}, "--begin", "not a Slurm time"),
    ({"deadline": "2020-01-01"}, "--deadline", "has passed"),
    ({"begin": "now+2days", "deadline": "now+1day"}, "--deadline", "comes before --begin"),
    ({"deadline": "now+30minutes"}, "--deadline", "Slurm would remove the job (DEADLINE)"),
    ({"sbatch_args": ["--time=5"]}, "--sbatch-arg", "--time is set by hpcjobs --time"),
    ({"sbatch_args": ["--mem-per-cpu=1G"]}, "--sbatch-arg", "--mem-per-cpu is set by hpcjobs"),
    ({"sbatch_args": ["--nodel=pve1"]}, "--sbatch-arg", "abbreviation sbatch may read as --nodelist"),
    ({"sbatch_args": ["-x", "pve1"]}, "--sbatch-arg", "not a long sbatch option"),
    ({"sbatch_args": ["--nice=1", "--nice=2"]}, "--sbatch-arg", "given twice"),
    ({"sbatch_args": ["--wrap=hostname"]}, "--sbatch-arg", "drop it"),
    ({"after": ["abc"]}, "--after", "JOBID[:STATE]"),
    ({"after": ["12:maybe"]}, "--after", "states:"),
    ({"signal": "KILL"}, "--signal", "use one of"),
    ({"signal_seconds": 0}, "--signal-seconds", "between"),
    ({"program": ["a\0b"]}, "program argument 1", "NUL"),
]


@pytest.mark.parametrize("change,field,words", BAD + BAD_SBATCH)
def test_bad_spec(change, field, words):
    with pytest.raises(BadInput) as e:
        validate(JobSpec(**{**OK, **change}), builtin())
    assert e.value.field == field
    assert words in str(e.value)
    assert "\n" not in str(e.value)


def test_defaults_come_from_the_cluster():
    s = validate(JobSpec(**OK), builtin())
    assert (s.nodes, s.gpus_per_node, s.partition, s.time) == (3, 1, "gpu", "01:00:00")


def no_max_time():
    """The built-in profile with no MaxTime on its partition."""
    c = builtin()
    return replace(c, partitions=tuple(replace(p, max_time=None) for p in c.partitions))


@pytest.mark.parametrize("t", ["30", "30:00", "1:00:00", "2-0", "2-12:00", "1-00:00:00", "UNLIMITED"])
def test_slurm_time_forms(t):
    assert validate(JobSpec(**OK, time=t), no_max_time()).time == t


@pytest.mark.parametrize("t", ["2-00:00:00", "2-0", "47:59:59", "2880"])
def test_a_time_up_to_the_partitions_max_time_is_accepted(t):
    assert validate(JobSpec(**OK, time=t), builtin()).time == t


@pytest.mark.parametrize("a", ["0-15", "0-15:4", "1,3,5", "0-99%10", "7"])
def test_array_forms(a):
    assert validate(JobSpec(**OK, array=a), builtin()).array == a


def test_dependency_mapping():
    s = JobSpec(**OK, after=["1", "2:any", "3:notok", "4:start", "5:corr"])
    assert dependency(s) == "afterok:1,afterany:2,afternotok:3,after:4,aftercorr:5"
    assert dependency(JobSpec(**OK)) is None


def test_spec_roundtrip():
    s = JobSpec(**OK, env={"A": "b"}, options={"x": 1})
    assert JobSpec.from_dict(s.to_dict()) == s


# --- arrays: the one parser (issue 11, point 3) ---------------------------------------------

@pytest.mark.parametrize("text,indices,throttle", [
    ("0-15", list(range(16)), None),
    ("0-99:3%4", list(range(0, 100, 3)), 4),
    ("1,3,5-7", [1, 3, 5, 6, 7], None),
    ("7", [7], None),
    ("3,1,1-2", [1, 2, 3], None),  # each task once, in order
    ("0-4%0", [0, 1, 2, 3, 4], None),  # Slurm reads %0 as no throttle
])
def test_parse_array_gives_the_task_indices_and_the_throttle(text, indices, throttle):
    a = parse_array(text)
    assert list(a.indices) == indices and a.throttle == throttle and a.count == len(indices)


# --- sbatch's value forms (sbatch_options) --------------------------------------------------

@pytest.mark.parametrize("text,mb", [("512", 512), ("512M", 512), ("64G", 65536), ("64g", 65536),
                                     ("1T", 1048576), ("1500K", 2), ("0", 0)])
def test_memory_sizes_as_slurm_reads_them(text, mb):
    from hpcjobs.sbatch_options import memory_mb

    assert memory_mb("--mem", text) == mb


NOW = datetime(2026, 12, 1, 22, 30, 0)


@pytest.mark.parametrize("text,when", [
    ("now", "2026-12-01 22:30:00"), ("now+1hour", "2026-12-01 23:30:00"),
    ("now+90", "2026-12-01 22:31:30"), ("now+2days", "2026-12-03 22:30:00"),
    ("now+1week", "2026-12-08 22:30:00"), ("16:00", "2026-12-02 16:00:00"),
    ("23:15", "2026-12-01 23:15:00"), ("4:00 PM", "2026-12-02 16:00:00"),
    ("11:30am", "2026-12-02 11:30:00"), ("teatime", "2026-12-02 16:00:00"),
    ("midnight", "2026-12-02 00:00:00"), ("tomorrow", "2026-12-02 00:00:00"),
    ("today", "2026-12-01 00:00:00"), ("2026-12-24", "2026-12-24 00:00:00"),
    ("2026-12-24T08:00", "2026-12-24 08:00:00"), ("2026-12-24T08:00:30", "2026-12-24 08:00:30"),
    ("12/24", "2026-12-24 00:00:00"), ("1224", "2026-12-24 00:00:00"),
    ("01/05", "2027-01-05 00:00:00"), ("12/24/27", "2027-12-24 00:00:00"),
    ("12.24.27", "2027-12-24 00:00:00"), ("12/24-08:00", "2026-12-24 08:00:00"),
])
def test_begin_and_deadline_in_slurms_time_forms(text, when):
    from hpcjobs.sbatch_options import slurm_time

    assert str(slurm_time("--begin", text, NOW)) == when


@pytest.mark.parametrize("text", ["sometime", "now+1fortnight", "25:00", "12:5", "13/01",
                                  "2026-13-01", "2026-02-30", "", "noon\nrm"])
def test_times_slurm_would_refuse(text):
    from hpcjobs.sbatch_options import slurm_time

    with pytest.raises(BadInput) as e:
        slurm_time("--deadline", text, NOW)
    assert e.value.field == "--deadline" and "not a Slurm time" in str(e.value)


def test_gres_request_merges_the_gpus_and_the_other_gres():
    s = validate(JobSpec(**OK), builtin())
    assert s.gres_request("v100s") == "gpu:v100s:1"
    s = validate(JobSpec(**OK, gres="nvme:1"), builtin())
    assert s.gres_request("v100s") == "gpu:v100s:1,nvme:1"  # one --gres line: sbatch keeps the last
    s = validate(JobSpec(**OK, gres="gpu:1"), builtin())
    assert s.gpus_per_node == 1 and s.gres_request("v100s") == "gpu:1"
    s = validate(JobSpec(**OK, gpus_per_node=0), builtin())
    assert s.gres_request("v100s") == ""


def test_exclude_shrinks_the_default_node_count():
    s = validate(JobSpec(**OK, exclude="pve3"), builtin())
    assert s.nodes == 2


def test_a_kind_without_default_gpus_gets_none():
    assert validate(JobSpec(**OK), builtin(), default_gpus=0).gpus_per_node == 0
    assert validate(JobSpec(**OK, gpus_per_node=1), builtin(), default_gpus=0).gpus_per_node == 1


def test_sbatch_options_and_pass_through_are_kept_in_the_spec():
    s = validate(JobSpec(**OK, mem="64G", mail_type="end,fail", mail_user="me@example.org",
                         begin="now+1hour", deadline="now+3days", exclusive=True,
                         sbatch_args=["--nice=5", "--licenses=a b"]), builtin())
    assert s.mail_type == "END,FAIL" and JobSpec.from_dict(s.to_dict()) == s


# --- what the live Slurm says (slurm.partitions / slurm.nodes, spec.check_live) -------------

# Recorded on the sandbox (Slurm 22.05.8).
PARTITION_2205 = (
    "PartitionName=gpu AllowGroups=ALL AllowAccounts=ALL AllowQos=ALL AllocNodes=ALL Default=YES "
    "QoS=N/A DefaultTime=01:00:00 DisableRootJobs=NO ExclusiveUser=NO GraceTime=0 Hidden=NO "
    "MaxNodes=UNLIMITED MaxTime=2-00:00:00 MinNodes=0 LLN=NO MaxCPUsPerNode=UNLIMITED "
    "Nodes=node[1-3] PriorityJobFactor=1 PriorityTier=1 RootOnly=NO ReqResv=NO OverSubscribe=NO "
    "OverTimeLimit=NONE PreemptMode=OFF State=UP TotalCPUs=96 TotalNodes=3 "
    "SelectTypeParameters=NONE JobDefaults=(null) DefMemPerCPU=5968 MaxMemPerNode=UNLIMITED "
    "TRES=cpu=96,mem=573000M,node=3,billing=96\n")
NODE_2205 = (
    "NodeName=node1 Arch=x86_64 CoresPerSocket=1  CPUAlloc=1 CPUEfctv=32 CPUTot=32 CPULoad=4.46 "
    "AvailableFeatures=(null) ActiveFeatures=(null) Gres=gpu:v100s:1 NodeAddr=10.200.0.1 "
    "NodeHostName=node1 Version=22.05.8 OS=Linux 6.18.44-fc-v857 #1 SMP PREEMPT_DYNAMIC @0  "
    "RealMemory=191000 AllocMem=5968 FreeMem=12714 Sockets=32 Boards=1 State=MIXED "
    "ThreadsPerCore=1 TmpDisk=0 Weight=1 Owner=N/A MCS_label=N/A Partitions=gpu  "
    "BootTime=2026-12-01T21:47:04 SlurmdStartTime=2026-12-01T21:56:54 "
    "LastBusyTime=2026-12-01T22:33:14 CfgTRES=cpu=32,mem=191000M,billing=32 "
    "AllocTRES=cpu=1,mem=5968M CapWatts=n/a CurrentWatts=0 AveWatts=0 ExtSensorsJoules=n/s "
    "ExtSensorsWatts=0 ExtSensorsTemp=n/s\n")


def live(**part):
    from hpcjobs.slurm import parse_nodes, parse_partitions

    parts = parse_partitions(PARTITION_2205)
    parts = [replace(parts[0], **part)] if part else parts
    nodes = parse_nodes("".join(NODE_2205.replace("node1", f"node{i}") for i in (1, 2, 3)))
    return parts, nodes


def test_partition_and_node_facts_are_parsed_from_scontrol():
    from hpcjobs.slurm import parse_nodes

    parts, nodes = live()
    p = parts[0]
    assert (p.name, p.state, p.max_time, p.total_nodes, p.max_nodes, p.nodes, p.default) == \
        ("gpu", "UP", "2-00:00:00", 3, None, "node[1-3]", True)
    n = nodes[0]
    assert (n.name, n.state, n.memory_mb, n.cpus, n.gpus, n.features, n.gres) == \
        ("node1", "MIXED", 191000, 32, 1, (), ("gpu",))
    # 24.11 prints the GPUs' sockets: gpu:a100:4(S:0-1); features as a comma list
    n = parse_nodes(NODE_2205.replace("Gres=gpu:v100s:1", "Gres=gpu:a100:4(S:0-1),nvme:1")
                    .replace("AvailableFeatures=(null)", "AvailableFeatures=ib,v100s"))[0]
    assert n.gpus == 4 and n.gres == ("gpu", "nvme") and n.features == ("ib", "v100s")


def sandbox_spec(**kw):
    """A spec as the sandbox's profile (node1..3) would have validated it."""
    base = dict(kind="mpi", program=["true"], nodes=1, gpus_per_node=0, partition="gpu",
                time="01:00:00")
    return JobSpec(**{**base, **kw})


LIVE_BAD = [
    ({"partition": "big"}, {}, "--partition", "Slurm has no partition 'big'"),
    ({}, {"state": "DOWN"}, "--partition", "partition 'gpu' is DOWN"),
    ({}, {"state": "INACTIVE"}, "--partition", "use an UP partition"),
    ({"time": "3-00:00:00"}, {}, "--time", "above the MaxTime 2-00:00:00 of partition 'gpu'"),
    ({"time": "04:00:00"}, {"max_time": "02:00:00"}, "--time", "use --time 02:00:00 or less"),
    ({"time": "0"}, {}, "--time", "means no time limit"),
    ({"nodes": 4}, {}, "--nodes", "partition 'gpu' has 3 (Slurm's TotalNodes)"),
    ({"nodes": 3, "exclude": "node2"}, {}, "--nodes", "has 2 not excluded"),
    ({"nodes": 3}, {"max_nodes": 2}, "--nodes", "allows 2 per job (MaxNodes)"),
    ({"gpus_per_node": 2}, {}, "--gpus-per-node", "(Slurm's Gres; at most 1)"),
    ({"mem": "200G"}, {}, "--mem", "Slurm's RealMemory; at most 191000 MB"),
    ({"mem_per_gpu": "200G", "gpus_per_node": 1}, {}, "--mem-per-gpu", "RealMemory at most"),
    ({"constraint": "ib&v100s"}, {}, "--constraint", "no node of partition 'gpu' has feature 'ib'"),
    ({"gres": "nvme:1"}, {}, "--gres", "has GRES 'nvme'"),
    ({"nodelist": "node7"}, {}, "--nodelist", "'node7' is not a node of partition 'gpu' in Slurm"),
]


@pytest.mark.parametrize("spec,part,field,words", LIVE_BAD)
def test_what_the_live_slurm_refuses(spec, part, field, words):
    from hpcjobs.spec import check_live

    parts, nodes = live(**part)
    with pytest.raises(BadInput) as e:
        check_live(sandbox_spec(**spec), "sandbox", parts, nodes)
    assert e.value.field == field and words in str(e.value) and "\n" not in str(e.value)


def test_what_the_live_slurm_accepts():
    from hpcjobs.spec import check_live

    parts, nodes = live()
    check_live(sandbox_spec(nodes=3, gpus_per_node=1, mem="100G", time="2-00:00:00",
                            gres="gpu:v100s:1", nodelist="node1"), "sandbox", parts, nodes)
    check_live(sandbox_spec(time="UNLIMITED"), "sandbox", *live(max_time="UNLIMITED"))


def status(jid, state):
    from hpcjobs.slurm import JobStatus

    return JobStatus(jid, state)


@pytest.mark.parametrize("after,found,words", [
    (["99999999"], {}, "Slurm does not know job 99999999"),
    (["12"], {"12": [status("12", "FAILED")]}, "job 12 already ended FAILED, so afterok:12 can "
                                               "never be satisfied"),
    (["12:ok"], {"12": [status("12_0", "COMPLETED"), status("12_1", "TIMEOUT")]}, "ended TIMEOUT"),
    (["12:notok"], {"12": [status("12", "COMPLETED")]}, "use --after 12:ok"),
])
def test_after_a_job_that_cannot_satisfy_it(after, found, words):
    from hpcjobs.spec import check_after

    with pytest.raises(BadInput) as e:
        check_after(sandbox_spec(after=after), found)
    assert e.value.field == "--after" and words in str(e.value)


def test_after_a_job_that_still_can():
    from hpcjobs.spec import check_after

    check_after(sandbox_spec(after=["12", "13:any", "14:notok", "15:start"]),
                {"12": [status("12", "RUNNING")], "13": [status("13", "FAILED")],
                 "14": [status("14_0", "COMPLETED"), status("14_1", "RUNNING")],
                 "15": [status("15", "PENDING")]})
