"""`repro image build`: repro's base image in the Docker daemon (built by debootstrap, or imported from
``REPRO_HOME/images``), and its root file system pushed to the store as ``images/<sha256>.tar.zst``
with a manifest, so that a replay of a run made in it imports those bytes, whatever debootstrap would
build later."""

from __future__ import annotations

from metaflow_repro.containers import image, stored
from metaflow_repro.settings import Settings
from metaflow_repro.store import open_store
from metaflow_repro.store.images import ImageManifest


def build_image(
    settings: Settings, store_uri: str | None, push: bool = True, log=print
) -> tuple[image.BuiltImage, ImageManifest | None]:
    """The base image, and (unless not ``push``) its store object in the store ``store_uri`` (default: the
    settings' store)."""
    client = image.client()
    built = image.build(settings.home, log=log, docker_client=client)
    if not push:
        return built, None
    store = open_store(store_uri or settings.store)
    return built, stored.publish(client, built.tag, store, settings.home, log=log)
