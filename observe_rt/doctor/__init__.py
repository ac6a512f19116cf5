"""`observe-rt doctor`: decide from a root tree and active-probe outcomes what this host can do.

model.py holds the data, checks_host.py / checks_probes.py the pure decisions, probes.py the
active probes (child processes, bpf(), bcc), report.py assembly and output, command.py the CLI.
"""
