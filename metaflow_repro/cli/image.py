"""``repro image build``: the base image for ``repro replay --on docker``, built from Debian's package
archive where no registry is reachable."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from metaflow_repro.cli.common import log
from metaflow_repro.errors import EXIT_OK

if TYPE_CHECKING:
    from metaflow_repro.settings import Settings


def configure(im: argparse.ArgumentParser) -> None:
    isub = im.add_subparsers(dest="image_command", required=True, metavar="ACTION")
    p = isub.add_parser(
        "build",
        help="build the base image from Debian's package archive (debootstrap) where no registry is reachable",
    )
    p.set_defaults(func=build)


def build(args: argparse.Namespace, settings: Settings) -> int:
    from metaflow_repro.containers import image

    built = image.build(settings.home, log=log)
    print(f"{built.tag} {built.id} (Python {built.python}){'' if built.built else ' (already built)'}")
    return EXIT_OK
