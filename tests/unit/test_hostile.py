"""Hostile input, without Slurm: every corpus string through every user field renders a
script that bash accepts, reaches the program exactly (as bash evaluates the script), is read
back exactly by sbatch's #SBATCH tokenizer, and never runs. Unknown partitions, bad array specs
and NUL bytes are refused with one line naming the field.

The real runs (sbatch parsing the lines, the program receiving its argv byte for byte) are in
tests/integration/test_hostile_argv.py.
"""

from __future__ import annotations

import os
import subprocess

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hpcjobs import runs
from hpcjobs.cluster import builtin
from hpcjobs.errors import BadInput
from hpcjobs.rendering import materialize, sbatch_value
from hpcjobs.spec import _ARRAY, JobSpec, validate
from tests.conftest import unchecked
from tests.fixtures.hostile import corpus, dir_name_ok, encode, job_name_ok

CANARY_DIR = f"/tmp/hpcjobs-hostile-unit-{os.getpid()}"  # per run: two test runs may overlap
CANARY = f"{CANARY_DIR}/canary"
CORPUS = corpus(CANARY)


def test_the_corpus_is_big_enough():
    assert len(CORPUS) >= 200
    assert sum(map(job_name_ok, CORPUS)) >= 200 and sum(map(dir_name_ok, CORPUS)) >= 200
    assert max(len(s) for s in CORPUS) >= 10240 and "" in CORPUS


# --- sbatch's tokenizer for #SBATCH lines, as Slurm's C code has it -------------------------
# src/sbatch/opt.c get_argument(), Slurm 22.05.8 and 24.11.5: blanks split outside quotes
# (' or "), a backslash takes the next character literally, an unquoted # ends the line.
# Difference: in 22.05 a backslash-escaped blank still ends the argument; 24.11 keeps it.
# The integration test checks the real 22.05 sbatch; this keeps 24.11 covered here.

def sbatch_tokens(text: str, version: str) -> list[str]:
    out, i, n = [], 0, len(text)
    while True:
        while i < n and text[i].isspace():
            i += 1
        if i >= n:
            return out
        arg, quoted, q, escape = [], False, "", False
        while i < n and (quoted or not text[i].isspace()):
            c = text[i]
            if escape:
                escape = False
            elif c == "\\":
                i += 1
                if version == "24.11" and i < n and text[i] == " ":
                    arg.append(" ")
                    i += 1
                else:
                    escape = True
                continue
            elif quoted:
                if c == q:
                    quoted = False
                    i += 1
                    continue
            elif c in "\"'":
                quoted, q = True, c
                i += 1
                continue
            elif c == "#":
                return out + (["".join(arg)] if arg else [])
            arg.append(c)
            i += 1
        assert not quoted, f"sbatch: Unmatched `{q}` in [{text}]"
        out.append("".join(arg))


def sbatch_option(script: str, option: str, version: str) -> str:
    for line in script.split("\n"):  # sbatch splits at \n only (str.splitlines also at \v ...)
        if line.startswith("#SBATCH"):
            for tok in sbatch_tokens(line[len("#SBATCH"):], version):
                if tok.startswith(f"--{option}="):
                    return tok.split("=", 1)[1]
    raise AssertionError(f"no --{option} line")


def slurm_filename(pattern: str, job_id: str) -> str:
    """What slurmd makes of --output for a batch job (fname.c): %% -> %, %j -> the id."""
    out, i = [], 0
    while i < len(pattern):
        if pattern[i] == "%" and pattern[i + 1:i + 2] == "%":
            out.append("%")
            i += 2
        elif pattern[i:i + 2] == "%j":
            out.append(job_id)
            i += 2
        else:
            out.append(pattern[i])
            i += 1
    return "".join(out)


# --- rendering --------------------------------------------------------------------------------

def render(kind="mpi", **kw) -> str:
    return materialize(unchecked(JobSpec(kind=kind, **kw)), run_dir="/tmp/run").script


def bash_n(script: str) -> None:
    r = subprocess.run(["bash", "-n"], input=encode(script), capture_output=True)
    assert r.returncode == 0, r.stderr.decode(errors="replace")


def evaluate(script: str, names: list[str]) -> tuple[list[bytes], list[bytes]]:
    """Run only the script's `set --` line and its `export` lines in bash; return "$@" and the
    exported values as bytes. Nothing else of the script runs (no srun)."""
    # Values may span lines (a quoted newline): cut at the next line hpcjobs itself wrote.
    start = script.index("\nset -- ") + 1
    args = script[start:script.index('\nif [ "$#" -eq 0 ]', start)]
    block = ""
    if "\nexport V" in script:
        block_start = script.index("\nexport V") + 1
        block = script[block_start:script.index("\n# A program given", block_start)]
    prog = (args + "\n" + block + '\nprintf "%s\\0" "$#" "$@"\n'
            + "".join(f'printf "%s\\0" "${n}"\n' for n in names))
    r = subprocess.run(["bash"], input=encode(prog), capture_output=True, env={"PATH": os.defpath})
    assert r.returncode == 0, r.stderr
    fields = r.stdout.split(b"\0")[:-1]
    n = int(fields[0])
    return fields[1:n + 1], fields[n + 1:]


@pytest.fixture(scope="module", autouse=True)
def canary_dir():
    os.makedirs(CANARY_DIR, exist_ok=True)
    if os.path.exists(CANARY):
        os.unlink(CANARY)
    yield
    executed = os.path.exists(CANARY)
    if executed:
        os.unlink(CANARY)
    os.rmdir(CANARY_DIR)
    assert not executed, "a corpus string was executed"


@pytest.mark.parametrize("i", range(len(CORPUS)))
def test_every_field_renders_and_round_trips(i, tmp_path):
    s = CORPUS[i]
    kw = {"program": ["prog", s, "--", s], "env": {"V1": s}}
    if job_name_ok(s):
        kw["job_name"] = s
    if dir_name_ok(s):
        (tmp_path / s).mkdir()
        kw["output_dir"] = str(tmp_path / s)
        kw["chdir"] = str(tmp_path / s)
    script = render(**kw)
    bash_n(script)
    # sbatch refuses a script holding CR LF anywhere ("DOS line breaks"), even inside quotes.
    assert "\r" not in script
    args, env = evaluate(script, ["V1"])
    assert args == [b"prog", encode(s), b"--", encode(s)]
    assert env == [encode(s)]
    for version in ("22.05", "24.11"):
        if "job_name" in kw:
            assert sbatch_option(script, "job-name", version) == s
        if "output_dir" in kw:
            assert slurm_filename(sbatch_option(script, "output", version), "77") == \
                f"{tmp_path / s}/slurm-77.out"
            assert sbatch_option(script, "chdir", version) == str(tmp_path / s)
    # Every #SBATCH line is one line for bash: a comment, whatever the value.
    assert all("\n" not in ln for ln in script.split("\n") if ln.startswith("#SBATCH"))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.text(st.characters(blacklist_characters="\0", blacklist_categories=("Cs",)),
                        max_size=40), max_size=8),
       st.text(st.characters(blacklist_characters="\0\n\r", blacklist_categories=("Cs",)),
               min_size=1, max_size=60))
def test_property_args_env_and_name_survive(args, name):
    script = render(program=["prog", *args], env={"V1": "".join(args)}, job_name=name
                    if job_name_ok(name) else None)
    got_args, got_env = evaluate(script, ["V1"])
    assert got_args == [b"prog", *map(encode, args)]
    assert got_env == [encode("".join(args))]
    if job_name_ok(name):
        assert sbatch_option(script, "job-name", "22.05") == name
        assert sbatch_option(script, "job-name", "24.11") == name


@settings(max_examples=200, deadline=None)
@given(st.text(st.characters(blacklist_characters="\0\n\r"), min_size=0, max_size=80))
def test_property_sbatch_value_is_read_back(value):
    line = "#SBATCH --job-name=" + sbatch_value(value)
    assert sbatch_option(line, "job-name", "22.05") == value
    assert sbatch_option(line, "job-name", "24.11") == value


# --- refused: with the field named, nothing rendered ----------------------------------------

def _refused(field: str, **kw) -> BadInput:
    with pytest.raises(BadInput) as e:
        validate(JobSpec(**{"kind": "mpi", "program": ["prog"], **kw}), builtin())
    assert e.value.field.startswith(field), e.value
    assert "\n" not in str(e.value)
    return e.value


@pytest.mark.parametrize("i", [i for i, s in enumerate(CORPUS)
                               if s not in {p.name for p in builtin().partitions}])
def test_hostile_partition_is_refused(i):
    _refused("--partition", partition=CORPUS[i])


@pytest.mark.parametrize("i", [i for i, s in enumerate(CORPUS) if not _ARRAY.match(s)])
def test_hostile_array_spec_is_refused(i):
    _refused("--array", array=CORPUS[i])


def test_array_specs_in_the_corpus_that_are_valid_render_as_given():
    valid = [s for s in CORPUS if _ARRAY.match(s)]
    assert valid, "the corpus has Slurm-valid array specs too (e.g. 1-3%2)"
    for s in valid:
        assert f"#SBATCH --array={s}\n" in render(program=["prog"], array=s)


@pytest.mark.parametrize("field,kw", [
    ("program argument 2", {"program": ["prog", "a\0b"]}),
    ("--env V", {"env": {"V": "\0"}}),
    ("--job-name", {"job_name": "x\0"}),
    ("--output-dir", {"output_dir": "/tmp/a\0b"}),
    ("--chdir", {"chdir": "/tmp\0"}),
])
def test_nul_is_a_clear_error(field, kw):
    err = _refused(field, **kw)
    assert "NUL" in str(err)


@pytest.mark.parametrize("field,kw,words", [
    ("--job-name", {"job_name": "x\ry"}, "one non-empty line"),
    ("--job-name", {"job_name": "ü" * 513}, "1026 bytes; Slurm takes at most 1024"),
    ("--output-dir", {"output_dir": "/tmp/a\rb"}, "one-line path"),
    ("--output-dir", {"output_dir": "/tmp/back\\slash"}, "backslash"),
    ("--output-dir", {"output_dir": "/" + "d" * 4090}, "too long"),
    ("--chdir", {"chdir": "/tmp/a\nb"}, "one-line directory"),
])
def test_values_slurm_cannot_take_are_refused(field, kw, words):
    assert words in str(_refused(field, **kw))


def test_job_name_of_exactly_1024_bytes_is_accepted():
    assert validate(JobSpec(kind="mpi", program=["p"], job_name="ü" * 512), builtin()).job_name


def test_non_utf8_arguments_reach_the_recorded_script_as_bytes(tmp_path, monkeypatch):
    """argv bytes that are not UTF-8 (Python keeps them as surrogates) are written to the run
    record byte for byte, and the spec round-trips."""
    monkeypatch.setenv("HPCJOBS_RUNS_DIR", str(tmp_path))
    arg = b"caf\xe9 \xff".decode("utf-8", "surrogateescape")
    job = unchecked(JobSpec(kind="mpi", program=["prog", arg], env={"V1": arg}))
    spec = job.spec
    script = materialize(job).script
    run = runs.create(runs.new_run_path("mpi"), script, spec.to_dict(), {}, {})
    data = run.script.read_bytes()
    assert b"'caf\xe9 \xff'" in data
    assert JobSpec.from_dict(run.spec()).program == ["prog", arg]
    args, env = evaluate(data.decode("utf-8", "surrogateescape"), ["V1"])
    assert args == [b"prog", b"caf\xe9 \xff"] and env == [b"caf\xe9 \xff"]
