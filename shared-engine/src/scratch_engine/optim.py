"""Placeholder: being written."""
class Adam:  # placeholder
    pass
class AdamW:  # placeholder
    pass
class GradientDescent:  # placeholder
    pass
class Optimizer:  # placeholder
    pass
def clip_grad_norm(): pass
