"""Helpers for users' own tests (a local conda channel builder)."""
