"""Real processes for tests: `rag-server serve` and `rag-server worker` as subprocesses.

The same helpers the benchmarks use (rag_server.evaluation.processes), under the tests' names.
"""

from rag_server.evaluation.processes import Child as Proc
from rag_server.evaluation.processes import child_env as process_env
from rag_server.evaluation.processes import free_port, start, start_server, start_worker, wait_healthy

__all__ = ["Proc", "free_port", "process_env", "start", "start_server", "start_worker", "wait_healthy"]
