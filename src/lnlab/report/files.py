"""Atomic file writes for the report (the one implementation lives in :mod:`lnlab.io`)."""

from lnlab.io import write_atomic

__all__ = ["write_atomic"]
