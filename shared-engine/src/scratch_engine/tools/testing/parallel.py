"""Data-parallel runs in fresh processes, joined as torchrun would join them; they never hang."""

from __future__ import annotations

import pickle
from collections.abc import Callable, Sequence
from typing import Any

import torch

from scratch_engine.tools.testing.gradcheck import assert_close


class DataParallelError(RuntimeError):
    """A rank of :func:`run_data_parallel` raised, died or did not finish in time."""


def assert_same_training(
    expected: dict[str, Any],
    ranks: Sequence[dict[str, Any]],
    what: str = "",
    logs: Sequence[str] = ("loss", "accuracy"),
) -> None:
    """Data-parallel ranks ended as one process did: ``{"state": state_dict, "history": {log: [...]}}`` each.

    Every rank's parameters and buffers equal the single process's to 1e-6 (float64 runs) and
    each other's exactly; the epoch ``logs`` found in ``history`` agree to a relative 1e-6.
    """
    first = ranks[0]
    for name, value in expected["state"].items():
        assert_close(first["state"][name], value, atol=1e-6, rtol=1e-6, name=f"{what} {name}")
        for k, other in enumerate(ranks[1:], 1):
            if not torch.equal(other["state"][name], first["state"][name]):
                raise AssertionError(f"{what}: rank {k}'s {name} differs from rank 0's")
    for log in logs:
        if log not in expected.get("history", {}):
            continue
        values, got = expected["history"][log], first["history"][log]
        if len(got) != len(values) or any(abs(a - b) > 1e-6 * max(abs(b), 1e-12) for a, b in zip(got, values)):  # noqa: B905
            raise AssertionError(f"{what}: epoch log {log!r} {got} != single process {values}")


def run_data_parallel(
    fn: Callable[..., Any],
    world_size: int = 2,
    *,
    args: Sequence[Any] = (),
    timeout: float = 120.0,
    collective_timeout: float = 30.0,
    backend: str = "gloo",
    threads: int | None = 1,
    start_method: str = "spawn",
) -> list[Any]:
    """Run ``fn(*args)`` in ``world_size`` fresh processes joined by :func:`scratch_engine.tools.distributed.setup`.

    Each process sees torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, a free
    ``MASTER_PORT`` on 127.0.0.1), joins the ``backend`` process group with
    ``collective_timeout`` seconds per collective, then calls ``fn``; the results (picklable)
    come back as a list indexed by rank. ``fn`` must be importable by name (a module-level
    function), as ``spawn`` starts a new interpreter.

    It never hangs: when a rank raises or dies, the others get a few seconds to report
    (their collectives fail once a peer is gone) and are then stopped, and the whole run
    stops after ``timeout`` seconds. Either raises :class:`DataParallelError` naming the
    rank that failed first and its exception (with traceback), and any other failures.
    """
    import multiprocessing
    import queue as queue_module
    import time

    if world_size < 1:
        raise ValueError(f"world_size must be at least 1, got {world_size}")
    context: Any = multiprocessing.get_context(start_method)  # typeshed's BaseContext declares no Process
    results: Any = context.Queue()
    port = _free_port()
    processes = [
        context.Process(
            target=_data_parallel_worker,
            args=(fn, tuple(args), rank, world_size, port, backend, collective_timeout, threads, results),
            daemon=True,
            name=f"scratch-rank-{rank}",
        )
        for rank in range(world_size)
    ]
    for process in processes:
        process.start()
    outcomes: dict[int, tuple[bool, Any]] = {}
    failed_at: dict[int, float] = {}  # rank -> when it raised (wall clock, as every rank reads it)
    deadline = time.monotonic() + timeout
    grace_end: float | None = None  # after a failure, how long the others may take to report
    try:
        while len(outcomes) < world_size:
            now = time.monotonic()
            if now >= deadline or (grace_end is not None and now >= grace_end):
                break
            try:
                rank, ok, payload, when = results.get(timeout=0.1)
            except queue_module.Empty:
                for rank, process in enumerate(processes):
                    if rank not in outcomes and not process.is_alive() and process.exitcode not in (None, 0):
                        time.sleep(0.2)  # whatever it sent before dying is read first, next round
                        if results.empty() and rank not in outcomes:
                            outcomes[rank] = (False, f"process exited with code {process.exitcode} without a result")
                            failed_at[rank] = time.time()
                if failed_at and grace_end is None:
                    grace_end = time.monotonic() + 2.0
                continue
            outcomes[rank] = (ok, payload)
            if not ok:
                failed_at[rank] = when
                if grace_end is None:
                    grace_end = time.monotonic() + 2.0
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()
        for process in processes:
            process.join(5)
            if process.is_alive():
                process.kill()
                process.join(5)
        results.close()
    if failed_at:
        # the first to raise, not the first to report: a peer's collective can fail and report sooner
        failures = sorted(failed_at, key=failed_at.__getitem__)
        first = failures[0]
        message = [f"rank {first} of {world_size} failed first:\n{outcomes[first][1]}"]
        message += [f"rank {rank} failed too: {_last_line(outcomes[rank][1])}" for rank in failures[1:]]
        stopped = [rank for rank in range(world_size) if rank not in outcomes]
        if stopped:
            message.append(f"rank(s) {stopped} were stopped")
        raise DataParallelError("\n".join(message))
    missing = [rank for rank in range(world_size) if rank not in outcomes]
    if missing:
        raise DataParallelError(f"rank(s) {missing} of {world_size} did not finish within {timeout} s and were stopped")
    return [pickle.loads(outcomes[rank][1]) for rank in range(world_size)]


def _free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _last_line(text: str) -> str:
    lines = [line for line in str(text).strip().splitlines() if line.strip()]
    return lines[-1] if lines else str(text)


def _data_parallel_worker(
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    rank: int,
    world_size: int,
    port: int,
    backend: str,
    collective_timeout: float,
    threads: int | None,
    results: Any,
) -> None:
    """One rank of :func:`run_data_parallel`: torchrun's environment, the process group, ``fn``, the report."""
    import os
    import time
    import traceback

    from scratch_engine.tools import distributed

    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(world_size),
        LOCAL_RANK=str(rank),
        LOCAL_WORLD_SIZE=str(world_size),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        distributed.setup(backend, timeout_seconds=collective_timeout, device="cpu" if backend == "gloo" else None)
        # tensors go by value (plain pickle), not through shared memory that dies with this process
        results.put((rank, True, pickle.dumps(fn(*args)), time.time()))
    except BaseException as error:  # any failure, reported to the parent
        raised_at = time.time()
        results.put((rank, False, f"{type(error).__name__}: {error}\n{traceback.format_exc()}", raised_at))
    finally:
        distributed.cleanup()
