"""The faults, each injected at a moment that hurts and followed by the operator's remedy (a restart)."""

from __future__ import annotations

import random
import time
from collections import Counter
from dataclasses import dataclass, field

import psycopg

from tests.chaos.cluster import CrashableCluster
from tests.chaos.services import FlakyEmbedder, Stack
from tests.chaos.traffic import SlowUpload, Stream, ask, big_text, sha256
from tests.fakes.llm_server import Behaviour, FakeLLM


@dataclass
class KilledStream:
    session: str
    answered_turns: int  # complete turns of this session before the killed one
    saw_done: bool  # the killed answer had been completed (then it may be stored)


@dataclass
class Injector:
    cluster: CrashableCluster
    embedder: FlakyEmbedder
    llm: FakeLLM
    stack: Stack
    database_url: str
    rng: random.Random
    upload_mb: int = 8
    injected: Counter[str] = field(default_factory=Counter)
    seconds: Counter[str] = field(default_factory=Counter)  # time spent in each kind, restarts included
    killed_streams: list[KilledStream] = field(default_factory=list)
    killed_uploads: dict[str, str] = field(default_factory=dict)  # sha256 -> what happened
    notes: list[str] = field(default_factory=list)

    def inject(self, kind: str) -> None:
        started = time.monotonic()
        getattr(self, kind)()
        self.injected[kind] += 1
        self.seconds[kind] += time.monotonic() - started

    def _processing(self) -> int:
        try:
            with psycopg.connect(self.database_url, connect_timeout=2) as conn:
                row = conn.execute("SELECT count(*) FROM job_tasks WHERE status = 'processing'").fetchone()
                return int(row[0]) if row else 0
        except psycopg.Error:
            return 0

    def worker_kill(self) -> None:
        """SIGKILL a worker, while tasks are processing when there are some (up to 3 s of waiting)."""
        deadline = time.monotonic() + 3
        while self._processing() == 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(self.rng.uniform(0, 0.5))  # anywhere in a task: reading, parsing, embedding, writing
        index = self.rng.randrange(len(self.stack.workers))
        self.stack.workers[index].kill()
        time.sleep(self.rng.uniform(0.3, 1.5))
        self.stack.start_worker(index)

    def pg_crash(self) -> None:
        """PostgreSQL crash-restart mid-batch: every connection of server and workers is cut."""
        self.cluster.crash()
        time.sleep(self.rng.uniform(0.5, 2.0))
        self.cluster.start()

    def embedder_outage(self) -> None:
        """The embedding service answers 500s, or refuses connections, for 2-4 s."""
        if self.rng.random() < 0.5:
            self.embedder.failing = True
            self.notes.append("embedder: HTTP 500")
        else:
            self.embedder.refuse()
            self.notes.append("embedder: connection refused")
        time.sleep(self.rng.uniform(2.0, 4.0))
        self.embedder.recover()

    def server_kill_streaming(self) -> None:
        """A complete chat turn, then SIGKILL of the server while the next answer streams."""
        session = f"chaos-{len(self.killed_streams)}"
        self.llm.behaviour = Behaviour()
        turns = int(ask(self.stack.base_url, session, "What does a chaos document say about faults?"))
        # The next answer streams two tokens, then hangs until its client (the server) goes away.
        self.llm.behaviour = Behaviour(hang_after_tokens=2, affects={"answer"})
        stream = Stream(self.stack.base_url, session, "And what happens after a crash?")
        stream.start()
        stream.opened.wait(30)
        time.sleep(0.5)  # the answer's first tokens on their way, the rest never coming
        self.stack.kill_server()
        stream.join(30)
        self.killed_streams.append(KilledStream(session, turns, "done" in stream.events))
        self.stack.start_server()

    def server_kill_uploading(self) -> None:
        """SIGKILL of the server halfway through a large multipart upload."""
        name = f"cut-{len(self.killed_uploads)}.txt"
        data = big_text(len(self.killed_uploads), self.upload_mb)
        upload = SlowUpload(self.stack.base_url, name, data)
        upload.start()
        upload.halfway.wait(60)
        self.stack.kill_server()
        upload.join(30)
        self.killed_uploads[sha256(data)] = f"{name}: answered {upload.status}"
        self.stack.start_server()


def schedule(rng: random.Random, counts: dict[str, int]) -> list[str]:
    """Every fault the requested number of times, in a random order."""
    events = [kind for kind, n in counts.items() for _ in range(n)]
    rng.shuffle(events)
    return events
