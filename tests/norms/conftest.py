"""Shared fixtures for the norm-zoo tests."""

from __future__ import annotations

import pytest

from ._reference import IMPLS, require


@pytest.fixture(params=IMPLS)
def impl(request: pytest.FixtureRequest) -> str:
    """Both code paths: the fused C kernel and the composite autograd fallback."""
    return require(request.param)
