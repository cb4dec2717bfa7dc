"""Everything the architectures share besides the lesson. It imports the core; the core never imports it.

Running experiments
    :mod:`~scratch_engine.tools.runner`      the one run recipe: a ``Task`` says what, ``run`` does the rest
    :mod:`~scratch_engine.tools.config`      a task's settings as a dataclass, and the flags derived from it
    :mod:`~scratch_engine.tools.cli`         ``train <task>``, ``demo``, one-line errors
    :mod:`~scratch_engine.tools.classify`    image classification (MNIST, Fashion-MNIST) as a task
    :mod:`~scratch_engine.tools.text`        vocabularies of characters
    :mod:`~scratch_engine.tools.records`     ``metrics.json`` and summary tables
    :mod:`~scratch_engine.tools.plots`       the figures (curves, confusion matrices, image grids...)
    :mod:`~scratch_engine.tools.datasets`    verified data sets: found locally, or downloaded and checked

Callbacks around the training step (:class:`scratch_engine.Callback`)
    :mod:`~scratch_engine.tools.precision`   float64/float32, and bfloat16 mixed precision
    :mod:`~scratch_engine.tools.distributed` data-parallel training (torchrun, the gradient all-reduce)
    :mod:`~scratch_engine.tools.twin`        the torch.nn twin trained on the same batches (whole-run parity)
    :mod:`~scratch_engine.tools.checkpoint`  checkpoint files, periodic saving, Ctrl-C and SIGTERM
    :mod:`~scratch_engine.tools.progress`    a live progress bar
    :mod:`~scratch_engine.tools.callbacks`   early stopping

Checking and measuring
    :mod:`~scratch_engine.tools.autograd`    the opt-in autograd mode (``Engine(Autograd(model), ...)``)
    :mod:`~scratch_engine.tools.testing`     gradient checks against autograd, isolation and README checks
    :mod:`~scratch_engine.tools.exercises`   a backward to write yourself, checked against autograd in one call
    :mod:`~scratch_engine.tools.benchmark`   training-step time and memory against torch.nn
    :mod:`~scratch_engine.tools.device`      devices and seeds
    :mod:`~scratch_engine.tools.files`       atomic writes
"""
