"""``tomllib`` (Python 3.11+) or its backport ``tomli`` on 3.10."""

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

__all__ = ["tomllib"]
