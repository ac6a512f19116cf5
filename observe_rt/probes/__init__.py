"""eBPF probes: syscalls, OOM kills, TCP flows and process exec/exit per container.

bpf/*.c hold the kernel programs; loader.py is the only importer of bcc; manager.py is the
entry point (ProbeManager); events.py the typed records everything else consumes.
"""
