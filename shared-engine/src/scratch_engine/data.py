"""Placeholder: being written."""
class DataLoader:  # placeholder
    pass
