"""CRI runtime.v1 messages (api_pb2) and gRPC stubs and servicers (api_pb2_grpc).

Generated from observe_rt/cri/proto/api.proto; do not edit api_pb2*.py* by hand, regenerate
with `python -m observe_rt.cri.proto.generate`.
"""
