# Metaflow finds card types in `metaflow_extensions.<org>.plugins.cards` (its CARDS list).
# Standard library and Metaflow only, Python 3.7+: imported inside tasks.
from ..card import ReproCard

CARDS = [ReproCard]
