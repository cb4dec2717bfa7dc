"""``pip install <name>`` from a real package index, as a user will once it is released.

    python scripts/index_install_check.py INDEX_DIR VENV_DIR scratch-rnn [--constraint FILE]

Serves INDEX_DIR (the built wheels and sdists) with pypiserver on 127.0.0.1, creates a fresh venv at
VENV_DIR and runs ``pip install <name>`` there with that index first and the usual indexes after it (for
torch and the other requirements). Then checks, exiting 1 with one line per failure, that
``scratch-engine`` came from the local index, that no other architecture was installed, and that
``<name> --help`` runs. pypiserver must be importable by the Python that runs this script.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
import venv
from pathlib import Path

ARCHITECTURES = {"scratch-mlp", "scratch-cnn", "scratch-rnn", "scratch-transformer"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def serve(index: Path, port: int) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "pypiserver", "run", "-i", "127.0.0.1", "-p", str(port)]
    server = subprocess.Popen([*command, "--disable-fallback", str(index)], stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/simple/", timeout=2):
                return server
        except OSError:
            if server.poll() is not None:
                raise SystemExit(f"pypiserver ended: {server.stderr.read().decode()}") from None  # type: ignore[union-attr]
            time.sleep(0.2)
    server.kill()
    raise SystemExit("pypiserver did not answer within 60 s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("index", type=Path)
    parser.add_argument("venv", type=Path)
    parser.add_argument("name")
    parser.add_argument("--constraint", help="a pip constraints file (the CPU build of torch, say)")
    args = parser.parse_args()
    port = free_port()
    server = serve(args.index.resolve(), port)
    failures = []
    try:
        venv.create(args.venv, with_pip=True)
        python = str(args.venv / "bin" / "python")
        local = f"http://127.0.0.1:{port}/simple/"
        report = args.venv / "install-report.json"
        install = [python, "-m", "pip", "install", "--quiet", "--index-url", local]
        extra = ["https://pypi.org/simple", *os.environ.get("PIP_EXTRA_INDEX_URL", "").split()]  # CLI beats the env
        install += [word for url in extra for word in ("--extra-index-url", url)]
        install += ["--report", str(report), args.name]
        install += ["--constraint", args.constraint] if args.constraint else []
        subprocess.run(install, check=True)
        installed = {
            item["metadata"]["name"]: item["download_info"]["url"] for item in json.loads(report.read_text())["install"]
        }
        engine = installed.get("scratch-engine", "")
        if not engine.startswith(f"http://127.0.0.1:{port}/"):
            failures.append(f"scratch-engine did not come from the local index: {engine or 'not installed'}")
        if others := sorted((ARCHITECTURES - {args.name}) & set(installed)):
            failures.append(f"other architectures were installed: {', '.join(others)}")
        done = subprocess.run([str(args.venv / "bin" / args.name), "--help"], capture_output=True, text=True)
        if done.returncode != 0 or "usage:" not in done.stdout:
            failures.append(f"{args.name} --help failed ({done.returncode}): {done.stderr.strip()[:300]}")
        print(
            f"installed from {local}: "
            + ", ".join(
                f"{name} ({url.split('/')[-1]})" for name, url in installed.items() if name.startswith("scratch")
            )
        )
    finally:
        server.kill()
        server.wait(30)
    for failure in failures:
        print(f"error: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
