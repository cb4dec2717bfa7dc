"""Placeholder: being written."""
class History:  # placeholder
    pass
