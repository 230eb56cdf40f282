"""Fixtures shared by the test modules."""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import settings

# CI explores the same hypothesis examples on every run, so a red build is reproducible;
# local runs keep exploring new ones.
settings.register_profile("ci", derandomize=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


@pytest.fixture
def one_thread():
    """Tiny models run faster on one intra-op thread (no OpenMP contention on a busy CPU);
    the setting is restored afterwards. Modules opt in with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
