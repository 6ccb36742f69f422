"""A real Chroma server for tests: ``chroma run`` (shipped with chromadb) on a free loopback port.

>>> with ChromaServer(tmp_dir) as server:
...     kb = KnowledgeBase.open(index_dir, chroma_url=server.url, collection="t1")

The session fixture ``chroma_server`` (conftest.py; its tests are marked ``server``) starts
one server for the whole run (about 2 s), waits for its heartbeat and stops it at teardown.
Tests keep apart by using their own collection name (:func:`unique_collection`); the manifest
stays in each test's tmp_path.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def unique_collection() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


class ChromaServer:
    """``chroma run --path DIR --host 127.0.0.1 --port N`` as a child process."""

    def __init__(self, path: Path, port: int | None = None, start_timeout: float = 60.0) -> None:
        self.path = Path(path)
        self.port = port or free_port()
        self.start_timeout = start_timeout
        self.process: subprocess.Popen[bytes] | None = None
        self.log = self.path.parent / f"chroma-{self.port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ChromaServer:
        chroma = Path(sys.executable).parent / "chroma"
        command = [str(chroma), "run", "--path", str(self.path), "--host", "127.0.0.1", "--port", str(self.port)]
        env = {**os.environ, "ANONYMIZED_TELEMETRY": "False"}
        self.path.mkdir(parents=True, exist_ok=True)
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"`chroma run` exited with {self.process.returncode}: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/api/v2/heartbeat", timeout=1.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(
            f"`chroma run` did not answer its heartbeat in {self.start_timeout:.0f}s: {self.log.read_text()[-2000:]}"
        )

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None

    def __enter__(self) -> ChromaServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
