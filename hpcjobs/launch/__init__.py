"""The per-task launcher: ``srun python -m hpcjobs.launch [--dry-run] [--explain] -- PROG ARGS...``.

It turns the task's Slurm variables and the node's sysfs into the environment that torch,
DeepSpeed, NCCL, UCX and MPI expect, then ``exec``s PROG (no wrapper process). It runs on every
task of every job, so this package imports nothing heavy: no click, jinja2, torch, numpy,
dataclasses, typing, json or tomllib on its path (see docs/launch.md for the measured cost).
"""
