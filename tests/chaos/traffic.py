"""The clients of a chaos run: a paced uploader that retries through outages, chat turns, and the two
requests the server is killed in the middle of (a streamed answer, a large multipart upload)."""

from __future__ import annotations

import hashlib
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx

from tests.support.sample_files import long_text

RETRYABLE = {502, 503, 504}


def make_documents(count: int, seed: int) -> list[tuple[str, bytes]]:
    """Distinct text files of 150-900 words (1-10 chunks of 128 tokens)."""
    files = []
    for i in range(count):
        words = 150 + (i * 7919 + seed) % 750
        text = f"Chaos document {i} of run {seed}.\n\n{long_text(words, seed=seed * 100_000 + i)}"
        files.append((f"chaos-{i:04d}.txt", text.encode()))
    return files


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(eq=False)  # a Thread must stay hashable
class Uploader(threading.Thread):
    """Uploads the files in small batches, `pace_s` apart, each batch retried until the server accepts it
    (a retry after a lost answer is harmless: the same bytes become a `duplicate` task)."""

    base_url: str
    files: list[tuple[str, bytes]]
    pace_s: float
    batch: int = 4
    acknowledged: set[str] = field(default_factory=set)  # sha256 of files the server accepted
    failures: Counter[str] = field(default_factory=Counter)  # why an attempt did not get a 202
    refused: list[str] = field(default_factory=list)  # non-retryable answers: a finding
    stopping: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        threading.Thread.__init__(self, name="chaos-uploader", daemon=True)

    def run(self) -> None:
        for start in range(0, len(self.files), self.batch):
            part = self.files[start : start + self.batch]
            while not self.stopping.is_set() and not self._send(part):
                time.sleep(0.5)
            time.sleep(self.pace_s * len(part))

    def _send(self, part: list[tuple[str, bytes]]) -> bool:
        files = [("files", (name, data, "text/plain")) for name, data in part]
        try:
            response = httpx.post(f"{self.base_url}/upload", files=files, timeout=60)
        except httpx.HTTPError as exc:
            self.failures[type(exc).__name__] += 1
            return False
        if response.status_code == 202:
            self.acknowledged.update(sha256(data) for _, data in part)
            return True
        self.failures[f"HTTP {response.status_code}"] += 1
        if response.status_code in RETRYABLE:
            return False
        self.refused.append(f"upload answered {response.status_code}: {response.text[:200]}")
        return True


def ask(base_url: str, session: str, question: str, attempts: int = 5) -> bool:
    """One complete chat turn (retried through a restarting server or database); True once answered."""
    for _ in range(attempts):
        try:
            r = httpx.post(f"{base_url}/query", json={"query": question, "session_id": session}, timeout=60)
            if r.status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(1)
    return False


@dataclass(eq=False)
class Stream(threading.Thread):
    """POST /query/stream, read until the server goes away; records the events it saw."""

    base_url: str
    session: str
    question: str
    events: list[str] = field(default_factory=list)
    opened: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        threading.Thread.__init__(self, name="chaos-stream", daemon=True)

    def run(self) -> None:
        body = {"query": self.question, "session_id": self.session}
        try:
            with httpx.stream("POST", f"{self.base_url}/query/stream", json=body, timeout=120) as r:
                for line in r.iter_lines():
                    if line.startswith("event: "):
                        self.events.append(line[7:].strip())
                        self.opened.set()  # `sources` opens the stream; the answer follows
        except httpx.HTTPError:
            pass
        finally:
            self.opened.set()  # never leave the injector waiting


@dataclass(eq=False)
class SlowUpload(threading.Thread):
    """A large multipart upload sent in 64 KB pieces; `halfway` is set once half the body is out."""

    base_url: str
    filename: str  # not `name`: Thread's own property
    data: bytes
    halfway: threading.Event = field(default_factory=threading.Event)
    status: int | None = None

    def __post_init__(self) -> None:
        threading.Thread.__init__(self, name="chaos-slow-upload", daemon=True)

    def _body(self, head: bytes, tail: bytes) -> Iterator[bytes]:
        yield head
        piece = 64 * 1024
        for offset in range(0, len(self.data), piece):
            if offset >= len(self.data) // 2:
                self.halfway.set()
            yield self.data[offset : offset + piece]
            time.sleep(0.005)
        yield tail

    def run(self) -> None:
        boundary = uuid.uuid4().hex
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{self.filename}"\r\n'
            "Content-Type: text/plain\r\n\r\n"
        ).encode()
        tail = f"\r\n--{boundary}--\r\n".encode()
        headers = {
            "Content-Type": f"multipart/form-data; boundary={boundary}",
            "Content-Length": str(len(head) + len(self.data) + len(tail)),
        }
        try:
            r = httpx.post(
                f"{self.base_url}/upload", content=self._body(head, tail), headers=headers, timeout=120
            )
            self.status = r.status_code
        except httpx.HTTPError:
            pass
        finally:
            self.halfway.set()


def big_text(index: int, megabytes: int) -> bytes:
    line = f"Upload cut short {index}: the server dies while these bytes are still arriving.\n"
    return (line * (megabytes * 2**20 // len(line) + 1)).encode()[: megabytes * 2**20]
