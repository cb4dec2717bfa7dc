"""Placeholder: being written."""
class Engine:  # placeholder
    pass
