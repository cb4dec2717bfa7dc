"""The record a run leaves behind: ``metrics.json`` (with the environment it ran in) and summary tables."""

from __future__ import annotations

import json
import math
import platform
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from scratch_engine.tools import distributed
from scratch_engine.tools.files import write_text_atomic


def environment(device: str | torch.device | None = None) -> dict[str, Any]:
    """Versions and hardware a result depends on: Python, torch, the scratch packages, device, threads."""
    packages = {
        name.replace("_", "-"): module.__version__
        for name, module in sorted(sys.modules.items())
        if name.startswith("scratch_") and "." not in name and isinstance(getattr(module, "__version__", None), str)
    }
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "packages": packages,
        "device": None if device is None else str(device),
        "cuda_device": torch.cuda.get_device_name(device)
        if device is not None and str(device).startswith("cuda")
        else None,
        "threads": torch.get_num_threads(),
        "world_size": distributed.world_size(),
    }


def write_metrics(out_dir: str | Path, metrics: Mapping[str, Any], device: str | torch.device | None = None) -> Path:
    """Write ``out_dir/metrics.json`` atomically: ``metrics`` plus an ``"environment"`` entry. Returns the path.

    Tensors become numbers or lists, dataclasses dicts, paths strings; a non-finite float is
    written as ``null`` so that the file stays strict JSON. Data-parallel, only rank 0 writes.
    """
    path = Path(out_dir) / "metrics.json"
    if not distributed.is_main_process():
        return path
    record = {**plain(dict(metrics)), "environment": environment(device)}
    return write_text_atomic(path, json.dumps(record, indent=2, allow_nan=False) + "\n")


def plain(value: Any) -> Any:
    """``value`` with tensors, tuples, dataclasses, paths and non-finite floats turned into what JSON holds."""
    if isinstance(value, Tensor):
        return plain(value.tolist())
    if is_dataclass(value) and not isinstance(value, type):
        return plain(asdict(value))
    if isinstance(value, Mapping):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def format_table(rows: Sequence[Mapping[str, Any]], markdown: bool = False) -> str:
    """Rows as a table, the first row's keys the header: aligned plain text, or Markdown."""
    if not rows:
        return "(nothing was trained)"
    header = list(rows[0])
    cells = [[str(row.get(key, "")) for key in header] for row in rows]
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
        return "\n".join(lines + ["| " + " | ".join(line) + " |" for line in cells])
    widths = [max(len(key), *(len(line[i]) for line in cells)) for i, key in enumerate(header)]
    table = [header, ["-" * width for width in widths], *cells]
    return "\n".join("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(line)).rstrip() for line in table)
