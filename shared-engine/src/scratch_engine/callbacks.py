"""Placeholder: being written."""
class Callback:  # placeholder
    pass
class EarlyStopping:  # placeholder
    pass
class ModelCheckpoint:  # placeholder
    pass
