"""The CRI server package: observe-rt's Kubernetes Container Runtime Interface (runtime.v1).

`proto/api.proto` is the schema (a mirror of kubernetes/cri-api); `v1/` holds the Python code
generated from it by `python -m observe_rt.cri.proto.generate`.
"""
