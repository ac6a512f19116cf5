"""The image side: references, media types, registry configuration and client, content store,
layer unpack. Modules here take paths and providers as parameters, so they test on fixture trees
and on a local registry.
"""
