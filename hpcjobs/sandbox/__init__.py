"""The sandbox: a real Slurm cluster on one Linux host, for trying jobs, tests and CI.

munged, slurmctld and N slurmd "nodes" run as root, each Slurm daemon in its own network, UTS
and mount namespace (addresses 10.200.0.0/24 on a bridge, hostnames node1..N, a private
/etc/hosts), configured by the same generator as the repository's ``slurm.conf.d/`` with a
short explicit list of swaps (:mod:`hpcjobs.sandbox.config`). ``hpcjobs sandbox up|down|status``
(:mod:`hpcjobs.sandbox.cli`); the work is in :mod:`hpcjobs.sandbox.lifecycle`.
See docs/sandbox.md.
"""
