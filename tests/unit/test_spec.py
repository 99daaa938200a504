"""Spec validation: each mistake is one line naming the option and the fix."""

import pytest

from hpcjobs.cluster import builtin
from hpcjobs.errors import BadInput
from hpcjobs.spec import JobSpec, dependency, validate

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
    ({"after": ["abc"]}, "--after", "JOBID[:STATE]"),
    ({"after": ["12:maybe"]}, "--after", "states:"),
    ({"signal": "KILL"}, "--signal", "use one of"),
    ({"signal_seconds": 0}, "--signal-seconds", "between"),
    ({"program": ["a\0b"]}, "program argument 1", "NUL"),
]


@pytest.mark.parametrize("change,field,words", BAD)
def test_bad_spec(change, field, words):
    with pytest.raises(BadInput) as e:
        validate(JobSpec(**{**OK, **change}), builtin())
    assert e.value.field == field
    assert words in str(e.value)
    assert "\n" not in str(e.value)


def test_defaults_come_from_the_cluster():
    s = validate(JobSpec(**OK), builtin())
    assert (s.nodes, s.gpus_per_node, s.partition, s.time) == (3, 1, "gpu", "01:00:00")


@pytest.mark.parametrize("t", ["30", "30:00", "1:00:00", "2-0", "2-12:00", "1-00:00:00", "UNLIMITED"])
def test_slurm_time_forms(t):
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
