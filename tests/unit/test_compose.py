"""docker-compose.yml cannot run here (no Docker engine): validate its structure instead."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]


def load_compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


def test_postgres_is_pinned_paradedb_pg18_with_healthcheck_and_volume() -> None:
    pg = load_compose()["services"]["postgres"]
    image = pg["image"]
    assert image.startswith("paradedb/paradedb:")
    tag = image.split(":", 1)[1]
    assert tag.endswith("-pg18") and not tag.startswith("latest"), f"unpinned tag {tag}"
    assert "pg_isready" in " ".join(pg["healthcheck"]["test"])
    volumes = pg["volumes"]
    assert any(v.startswith("pgdata:") for v in volumes)
    assert "./services/postgres/init.sql:/docker-entrypoint-initdb.d/20-init.sql:ro" in volumes
    assert "pgdata" in load_compose()["volumes"]


def test_postgres_image_is_the_pg_search_line_our_sql_targets() -> None:
    """0.26.x: keyless BM25 index with the collection (migration 0004), checked against sqlalchemy-paradedb
    in tests/unit/test_pg_search_sql.py. Another line needs that comparison redone first."""
    tag = load_compose()["services"]["postgres"]["image"].split(":", 1)[1]
    assert re.fullmatch(r"0\.26\.\d+-pg18", tag), tag


def test_app_services_share_one_image_and_database_url_and_wait_for_db() -> None:
    services = load_compose()["services"]
    server, worker = services["rag-server"], services["pgmq-worker"]
    assert server["build"] == worker["build"] == "."
    assert server["environment"]["DATABASE_URL"] == worker["environment"]["DATABASE_URL"]
    assert server["environment"]["DATABASE_URL"].startswith("postgresql://")
    for svc in (server, worker):
        assert svc["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert worker["command"] == ["rag-server", "worker"]
    assert "serve" in server["command"]
    assert any(str(p).endswith(":8000") for p in server["ports"])
    assert "/health/ready" in " ".join(server["healthcheck"]["test"])


def test_init_sql_creates_required_extensions() -> None:
    sql = (ROOT / "services/postgres/init.sql").read_text()
    assert "CREATE EXTENSION IF NOT EXISTS vector" in sql
    assert "CREATE EXTENSION IF NOT EXISTS pg_search" in sql


def test_dockerfile_pins_cpu_torch() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "torch==2.13.0" in dockerfile and "whl/cpu" in dockerfile


def test_the_image_holds_both_graphs_its_processes_load() -> None:
    # The rag user cannot write /app/models: a graph missing from the image would be quantized (int8,
    # for queries) or exported at start-up into it, and fail.
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "for p in ('fp32', 'int8')" in dockerfile
    assert dockerfile.index("int8") < dockerfile.index("USER rag")


def test_the_exposed_server_gets_an_admin_key_and_the_runtime_role_a_password() -> None:
    """The server listens on 0.0.0.0 in its container, so it refuses to start without an API key: the
    admin key comes from a secret file (or RAG_BOOTSTRAP_ADMIN_KEY), which `just docker-up` creates."""
    compose = load_compose()
    secret_file = compose["secrets"]["rag_admin_key"]["file"]
    server = compose["services"]["rag-server"]
    assert server["environment"]["RAG_BOOTSTRAP_ADMIN_KEY_FILE"] == "/run/secrets/rag_admin_key"
    assert server["secrets"] == ["rag_admin_key"]
    assert "secrets" not in compose["services"]["pgmq-worker"]  # the worker needs no key
    for name in ("rag-server", "pgmq-worker"):  # TCP logins to ParadeDB are password-checked
        assert compose["services"][name]["environment"]["RAG_RUNTIME_DB_PASSWORD"]
    assert "0.0.0.0" in compose["services"]["rag-server"]["command"]
    justfile = (ROOT / "justfile").read_text()
    assert secret_file.removeprefix("./") in justfile and "openssl rand -hex 32" in justfile
    assert "secrets/" in (ROOT / ".gitignore").read_text().splitlines()


def test_docker_up_writes_a_secret_the_containers_user_can_read_and_other_users_cannot_reach(
    tmp_path: Path,
) -> None:
    # Compose mounts the file with its host owner and mode; the server runs as uid 1000 in the image.
    # A 600 file written by root (or any uid but 1000) was unreadable there: the server exited at start.
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    docker = fake_bin / "docker"  # no Docker engine here: the recipe's last step only records its call
    docker.write_text(f'#!/bin/sh\necho "$@" > {tmp_path / "docker-called"}\n')
    docker.chmod(0o755)
    just = shutil.which("just")
    assert just, "the tests run under just (README)"

    def docker_up(project: Path) -> None:
        done = subprocess.run(
            [just, "--justfile", str(ROOT / "justfile"), "--working-directory", str(project), "docker-up"],
            env={**os.environ, "PATH": f"{fake_bin}:{os.environ['PATH']}"},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        assert stat.S_IMODE((project / "secrets" / "rag_admin_key").stat().st_mode) == 0o644
        assert stat.S_IMODE((project / "secrets").stat().st_mode) == 0o700
        assert (tmp_path / "docker-called").read_text().split() == ["compose", "up", "-d", "--build"]

    fresh = tmp_path / "fresh"
    fresh.mkdir()
    docker_up(fresh)
    assert re.fullmatch(r"[0-9a-f]{64}\n", (fresh / "secrets" / "rag_admin_key").read_text())
    # A key an earlier version of the recipe made (600, in a 755 folder) is kept, and made readable.
    earlier = tmp_path / "earlier"
    (earlier / "secrets").mkdir(parents=True)
    (earlier / "secrets").chmod(0o755)
    (earlier / "secrets" / "rag_admin_key").write_text("a" * 64 + "\n")
    (earlier / "secrets" / "rag_admin_key").chmod(0o600)
    docker_up(earlier)
    assert (earlier / "secrets" / "rag_admin_key").read_text() == "a" * 64 + "\n"
