"""Test helpers shared by every scratch package (the engine's tooling, never the training path).

- :mod:`~scratch_engine.tools.testing.gradcheck`  ``check_backward`` against autograd, ``assert_close``, caches
- :mod:`~scratch_engine.tools.testing.exercises`  an exercise's checker passes its solution, names wrong gradients
- :mod:`~scratch_engine.tools.testing.precision`  other devices and bfloat16 tolerances
- :mod:`~scratch_engine.tools.testing.isolation`  each distribution alone, its training path from scratch
- :mod:`~scratch_engine.tools.testing.parallel`   data-parallel runs in fresh processes
- :mod:`~scratch_engine.tools.testing.runs`       train commands stopped, killed and resumed; a full disk
- :mod:`~scratch_engine.tools.testing.data`       real data sets, required
- :mod:`~scratch_engine.tools.testing.readme`     README code blocks run as written
"""

from scratch_engine.tools.testing.data import assert_missing_data_is_one_line_error, require_data_dir
from scratch_engine.tools.testing.exercises import assert_checks_both_ways
from scratch_engine.tools.testing.gradcheck import (
    GRAD_PREFILL,
    assert_close,
    cached_tensors,
    check_backward,
    default_device,
    random_inputs,
)
from scratch_engine.tools.testing.isolation import (
    ARCHITECTURES,
    FORBIDDEN_IN_TRAINING_PATH,
    allowed_imports,
    assert_console_script,
    assert_from_scratch,
    assert_isolated,
    imported_modules,
)
from scratch_engine.tools.testing.parallel import DataParallelError, assert_same_training, run_data_parallel
from scratch_engine.tools.testing.precision import (
    TEST_DEVICE_VARIABLE,
    assert_bfloat16_close,
    precision_errors,
    seeded_generator,
    use_test_device,
)
from scratch_engine.tools.testing.readme import python_blocks, run_readme_examples
from scratch_engine.tools.testing.runs import (
    FullDiskStream,
    assert_kill_leaves_a_recent_checkpoint,
    assert_sigterm_resume_is_exact,
    fill_the_disk,
)

__all__ = [
    "ARCHITECTURES",
    "FORBIDDEN_IN_TRAINING_PATH",
    "GRAD_PREFILL",
    "TEST_DEVICE_VARIABLE",
    "DataParallelError",
    "FullDiskStream",
    "allowed_imports",
    "assert_bfloat16_close",
    "assert_checks_both_ways",
    "assert_close",
    "assert_console_script",
    "assert_from_scratch",
    "assert_isolated",
    "assert_kill_leaves_a_recent_checkpoint",
    "assert_missing_data_is_one_line_error",
    "assert_same_training",
    "assert_sigterm_resume_is_exact",
    "cached_tensors",
    "check_backward",
    "default_device",
    "fill_the_disk",
    "imported_modules",
    "precision_errors",
    "python_blocks",
    "random_inputs",
    "require_data_dir",
    "run_data_parallel",
    "run_readme_examples",
    "seeded_generator",
    "use_test_device",
]
