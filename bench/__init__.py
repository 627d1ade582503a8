"""The cuemsg benchmark: `python -m bench` (see `bench/__main__.py` and docs/benchmarks.md).

Modules: `procs` starts servers and client processes, `drivers` gives one
messaging interface over the Mailbox and the raw client, `roles` is what
each client process does, `rows` and `peers` turn role results into table
rows, `suite` runs them all and computes the ratios, `report` prints and
writes the table.
"""
