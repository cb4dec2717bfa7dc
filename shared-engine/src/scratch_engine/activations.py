"""Placeholder: being written."""
class GELU:  # placeholder
    pass
class LeakyReLU:  # placeholder
    pass
class ReLU:  # placeholder
    pass
class Sigmoid:  # placeholder
    pass
class Tanh:  # placeholder
    pass
