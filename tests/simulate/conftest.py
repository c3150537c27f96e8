"""The simulator's slow tests (torch.compile and large renders), marked here so that their files,
shared with work on the simulator, stay as they are."""

from __future__ import annotations

import pytest

SLOW = ("test_fused.py::test_compiled_rendering_equals_eager", "test_fused.py::test_without_a_compiler_auto_falls_back_to_eager",
        "test_psf_noise.py::test_host_margin_recovers_the_light_scattered_in_from_beyond_the_stamp",
        "test_simulate.py::test_rendered_controls_and_injections_differ_only_by_the_arc")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if any(s in item.nodeid for s in SLOW):
            item.add_marker(pytest.mark.slow)
