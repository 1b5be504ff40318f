"""`hub demo`: the main job, running the example tenants end to end on this machine.

The command runs the steps listed in `hub.cli.demo.steps.STEPS` in order, prints the summary
each step returned, and keeps serving until Ctrl-C unless `--no-serve` is given.
"""
