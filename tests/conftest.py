import os
import tempfile
from pathlib import Path

import pytest
import torch

torch.set_num_threads(2)
# Decoded training images are cached on disk (analysis.patches); keep the tests' cache out of the user's home.
os.environ.setdefault("SYMMETRY_CACHE", tempfile.mkdtemp(prefix="symmetry-test-cache-"))

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` beside the repository; tests that need it skip when it is absent."""
    if not (SHARED_DATA / "rain100l").is_dir():
        pytest.skip("../shared/data/rain100l is not present")
    return SHARED_DATA
