"""Placeholder: being written."""
class InverseSqrtWarmup:  # placeholder
    pass
class LRScheduler:  # placeholder
    pass
class StepLR:  # placeholder
    pass
class WarmupCosine:  # placeholder
    pass
