import importlib.util
import os

import pytest
import torch


def pytest_sessionstart(session):
    # `make test` builds the test-only emulation of the CUDA kernel
    # (FUSED_RMSPROP_EMULATION=1); its tests must not skip silently there.
    if os.environ.get("FUSED_RMSPROP_EMULATION") == "1" and \
            importlib.util.find_spec("fused_rmsprop._C_emulation") is None:
        raise pytest.UsageError("FUSED_RMSPROP_EMULATION=1 but fused_rmsprop._C_emulation "
                                "was not built: run `make build`")


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)
