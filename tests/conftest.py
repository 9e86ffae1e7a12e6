from pathlib import Path

import pytest
import torch

torch.set_num_threads(2)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` beside the repository; tests that need it skip when it is absent."""
    if not (SHARED_DATA / "rain100l").is_dir():
        pytest.skip("../shared/data/rain100l is not present")
    return SHARED_DATA
