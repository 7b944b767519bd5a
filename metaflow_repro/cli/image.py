"""``repro image build``: the base image for ``repro replay --on docker``, built from Debian's package
archive where no registry is reachable, and pushed to the store as ``images/<sha256>.tar.zst``."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from metaflow_repro.cli.common import STORE_HELP, add_flag, add_store, log
from metaflow_repro.errors import EXIT_OK

if TYPE_CHECKING:
    from metaflow_repro.settings import Settings


def configure(im: argparse.ArgumentParser) -> None:
    isub = im.add_subparsers(dest="image_command", required=True, metavar="ACTION")
    p = isub.add_parser(
        "build",
        help="build the base image from Debian's package archive (debootstrap) where no registry is reachable, "
        "and push its root file system to the store (images/<sha256>.tar.zst)",
    )
    add_store(p, STORE_HELP)
    add_flag(p, "--no-push", help="only build (or import) the image in the Docker daemon; push nothing")
    p.set_defaults(func=build)


def build(args: argparse.Namespace, settings: Settings) -> int:
    from metaflow_repro.operations.image import build_image

    built, manifest = build_image(settings, args.store, push=not args.no_push, log=log)
    print(f"{built.tag} {built.id} (Python {built.python}){'' if built.built else ' (already built)'}")
    if manifest is not None:
        print(
            f"in the store as images/{manifest.sha256}.tar.zst ({manifest.size / 1e6:.0f} MB; "
            f"{len(manifest.packages)} Debian packages, archive of {manifest.release_date or 'unknown date'})"
        )
    return EXIT_OK
