"""`observe-rt images ...`: pull, list, inspect, remove, import and prune images."""

from __future__ import annotations

import argparse
import base64
import json
import os

from observe_rt.client.cli import human_bytes
from observe_rt.errors import InvalidArgument

DEFAULT_ROOT = "/var/lib/observe-rt/images"
DEFAULT_HOSTS_DIR = "/etc/observe-rt/certs.d"
DEFAULT_POLICY = "/etc/observe-rt/policy.json"


def register(sub: argparse._SubParsersAction) -> None:
    images = sub.add_parser("images", help="pull, list, inspect, remove, import, prune images")
    images.add_argument(
        "--root", default=DEFAULT_ROOT, help=f"image store (default {DEFAULT_ROOT})"
    )
    images.add_argument("--hosts-dir", default=DEFAULT_HOSTS_DIR,
                        help="registry hosts.toml directory (containerd's format)")  # fmt: skip
    images.add_argument("--policy", default=DEFAULT_POLICY, help="trust policy file")
    commands = images.add_subparsers(dest="images_command", required=True, metavar="COMMAND")

    pull = commands.add_parser("pull", help="pull an image from its registry")
    pull.add_argument("name")
    pull.add_argument("--creds", help="USER:PASSWORD for the registry")
    pull.add_argument("--auth-file", help="a docker config.json with credentials")
    pull.set_defaults(func=_pull)

    listing = commands.add_parser("ls", help="list images")
    listing.add_argument("--quiet", "-q", action="store_true", help="ids only")
    listing.set_defaults(func=_list)

    for name, func, text in (("inspect", _inspect, "an image's record and config as JSON"),
                             ("rm", _remove, "remove images (all their tags)")):  # fmt: skip
        p = commands.add_parser(name, help=text)
        p.add_argument("names", nargs="+", metavar="NAME")
        p.set_defaults(func=func)

    imp = commands.add_parser("import", help="import an OCI layout or docker save tar")
    imp.add_argument("archive")
    imp.set_defaults(func=_import)

    prune = commands.add_parser("prune", help="remove images no container uses")
    prune.set_defaults(func=_prune)

    usage = commands.add_parser("df", help="bytes and inodes the image store uses")
    usage.set_defaults(func=_usage)


def _service(args, docker_config: str | None = None):
    from observe_rt.oci.images import ImageService
    from observe_rt.oci.policy import TrustPolicy

    policy = TrustPolicy.load(args.policy)
    return ImageService(
        args.root, hosts_dir=args.hosts_dir, policy=policy, docker_config=docker_config
    )


def _pull(args) -> int:
    auth_config = None
    if args.creds:
        if ":" not in args.creds:
            raise InvalidArgument("--creds: expected USER:PASSWORD")
        auth_config = {"auth": base64.b64encode(args.creds.encode()).decode()}
    record = _service(args, args.auth_file).pull(args.name, auth_config)
    print(f"{args.name}: {record.id}")
    return 0


def _list(args) -> int:
    records = _service(args).list()
    if args.quiet:
        for record in records:
            print(record.id)
        return 0
    print(f"{'IMAGE':<50} {'TAG':<16} {'IMAGE ID':<14} {'SIZE':>10}")
    for record in records:
        for name, tag in _names(record):
            print(f"{name:<50} {tag:<16} {record.id[7:20]:<14} {human_bytes(record.size):>10}")
    return 0


def _names(record) -> list[tuple[str, str]]:
    if record.repo_tags:
        return [tuple(t.rsplit(":", 1)) for t in record.repo_tags]
    if record.repo_digests:
        return [(d.split("@", 1)[0], "<none>") for d in record.repo_digests]
    return [("<none>", "<none>")]


def _inspect(args) -> int:
    from dataclasses import asdict

    service = _service(args)
    out = []
    for name in args.names:
        record = service.get(name)
        out.append({"record": asdict(record), "config": service.config(record)})
    print(json.dumps(out, indent=2))
    return 0


def _remove(args) -> int:
    service = _service(args)
    for name in args.names:
        print(f"removed {service.remove(name).id}")
    return 0


def _import(args) -> int:
    if not os.path.isfile(args.archive):
        raise InvalidArgument(f"import: {args.archive} is not a file")
    for record in _service(args).import_archive(args.archive):
        print(f"imported {record.id} {' '.join(record.repo_tags)}")
    return 0


def _prune(args) -> int:
    # Containers belong to the daemon; from the command line no container is known to use
    # an image, so this removes every image that is not pinned.
    for record in _service(args).prune():
        print(f"removed {record.id}")
    return 0


def _usage(args) -> int:
    usage = _service(args).fs_usage()
    print(json.dumps({"bytes": usage.bytes, "inodes": usage.inodes}))
    return 0
