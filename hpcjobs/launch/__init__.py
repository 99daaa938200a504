"""The per-task launcher: ``srun python -m hpcjobs.launch [--dry-run] [--explain] -- PROG ARGS...``.

It turns the task's Slurm variables and the node's sysfs into the environment that torch,
DeepSpeed, NCCL, UCX and MPI expect, then ``exec``s PROG (no wrapper process). It runs on every
task of every job, so this package imports nothing heavy: no click, jinja2, torch, numpy,
dataclasses, typing, json, tomllib, re, enum or signal on its path (see docs/launch.md for the
measured cost). Its modules do without ``from __future__ import annotations``: Python 3.11
evaluates their annotations as they are, and importing ``__future__`` costs ~0.2 ms per task.
"""
