"""Code that runs inside the job, on the compute nodes: one module per kind that needs a runner.

The login-node side (cli, api, prepared, rendering, kinds, planner) renders and submits; this
package and :mod:`hpcjobs.launch` are what the batch script and its steps run on every node
(``python -m hpcjobs.runners.<name> ...``). So the rule for every module here: import only the
standard library, :mod:`hpcjobs.errors`, :mod:`hpcjobs.runs` (records), :mod:`hpcjobs.launch`
and other runners; never click, jinja2, the planner or a kind (tests/unit/test_layers.py checks).
The kinds import their runner's shared parts (a config generator, an argument parser) from here,
never the other way round.
"""
