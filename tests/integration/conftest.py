"""The integration tier: a real ComfyUI at COMFYUI_PATH, skipped where there is none."""

import pytest

from harness import CONTROLNET_NAME, PROBE_NODES, ComfyServer, cached_controlnet, comfyui_path


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)
            if comfyui_path() is None:
                item.add_marker(pytest.mark.skip(reason="integration tier: set COMFYUI_PATH to a ComfyUI checkout"))


@pytest.fixture(scope="session")
def comfy_server():
    """One server for the session: shallow random SD1.5, a random ControlNet for it, the
    8-frame 64x64 test clip, the test-only probe nodes and the packs in VRWKV_EXTRA_NODES
    (e.g. VideoHelperSuite)."""
    with ComfyServer(checkpoints=("shallow",), extra_nodes=[PROBE_NODES],
                     files={f"models/controlnet/{CONTROLNET_NAME}": cached_controlnet("shallow")}) as server:
        yield server


@pytest.fixture(scope="session")
def comfy_server_full():
    """A server with the full-topology random SD1.5 (started only by tests that use it)."""
    with ComfyServer(checkpoints=("full",)) as server:
        yield server
