"""Every Python block of a README runs as written."""

from __future__ import annotations

import re
from pathlib import Path


def python_blocks(markdown: Path) -> list[str]:
    """The fenced ```python blocks of a Markdown file, in order."""
    return re.findall(r"^```python\n(.*?)^```", markdown.read_text(encoding="utf-8"), flags=re.MULTILINE | re.DOTALL)


def run_readme_examples(markdown: Path, workdir: Path) -> int:
    """Run every ```python block of ``markdown`` in order, in one namespace, inside ``workdir``.

    Returns how many blocks ran. The README's usage is then tested code, not a promise.
    """
    import os
    import sys
    import types

    blocks = python_blocks(markdown)
    module = types.ModuleType("__readme__")  # a real module, as a script's __main__ is (dataclasses look it up)
    sys.modules[module.__name__] = module
    previous = Path.cwd()
    os.chdir(workdir)
    try:
        for number, block in enumerate(blocks, 1):
            try:
                exec(compile(block, f"{markdown.name}[python block {number}]", "exec"), module.__dict__)
            except Exception as err:
                raise AssertionError(f"{markdown} python block {number} failed: {err!r}") from err
    finally:
        os.chdir(previous)
        del sys.modules[module.__name__]
    return len(blocks)
