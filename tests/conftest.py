import os

import pytest
import torch
from hypothesis import HealthCheck, settings

settings.register_profile("default", max_examples=int(os.environ.get("OPERAD_EXAMPLES", "10")), deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
                          derandomize=os.environ.get("OPERAD_RANDOM") is None, print_blob=True)
settings.register_profile("thorough", max_examples=60, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

torch.set_num_threads(min(2, torch.get_num_threads()))

SHARED = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "shared"))


@pytest.fixture
def shared_data():
    path = os.environ.get("OPERAD_SHARED_DATA", os.path.join(SHARED, "data"))
    if not os.path.isdir(path):
        pytest.skip(f"shared data not found at {path}")
    return path
