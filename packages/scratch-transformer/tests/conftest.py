"""``SCRATCH_TEST_DEVICE=cuda pytest`` runs these tests with torch's default device set to the GPU."""

from scratch_engine.tools.testing import use_test_device

use_test_device()
