"""The CRI runtime.v1 schema (api.proto) and the script that generates observe_rt.cri.v1."""
