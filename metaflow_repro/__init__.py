"""repro: prove a Metaflow flow's results can be reproduced."""

__version__ = "0.1.0"
