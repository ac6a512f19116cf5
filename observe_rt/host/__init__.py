"""The one doorway to privileged kernel calls (ctypes libc wrappers).

Everything else in observe_rt takes paths or objects as parameters so it can be tested on
fixture trees; only this package (and probes/loader.py) talk to the kernel directly.
"""
