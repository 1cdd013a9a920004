import os

import pytest
import torch

# Two cores: keep intra-op threads bounded so parallel test processes do not thrash.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture
def seed():
    torch.manual_seed(0)
    return 0
