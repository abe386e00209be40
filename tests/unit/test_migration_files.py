"""`migrations.shipped_head()` reads the head from the files' names, without Alembic: it holds only
while every revision is its file's name and each one follows the file before it."""

from __future__ import annotations

import ast
from pathlib import Path

from alembic.script import ScriptDirectory

from rag_server.infra.migrations import MIGRATIONS_DIR, shipped_head, shipped_revisions


def _assigned(path: Path, name: str) -> object:
    tree = ast.parse(Path(path).read_text(encoding="utf-8"))
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
        if any(isinstance(t, ast.Name) and t.id == name for t in targets):
            assert isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None
            return ast.literal_eval(node.value)
    raise AssertionError(f"{path} assigns no {name}")


def test_each_revision_is_its_file_name_and_follows_the_one_before() -> None:
    files = sorted((MIGRATIONS_DIR / "versions").glob("[0-9][0-9][0-9][0-9]_*.py"))
    assert len(files) >= 30
    previous = None
    for path in files:
        assert _assigned(path, "revision") == path.stem
        assert _assigned(path, "down_revision") == previous
        previous = path.stem
    assert shipped_head() == previous
    alembic = ScriptDirectory(str(MIGRATIONS_DIR))  # Alembic's own reading agrees
    assert alembic.get_heads() == [previous]
    assert shipped_revisions() == {script.revision for script in alembic.walk_revisions()}
    # Nothing else in the folder is a migration Alembic would load.
    others = {p.name for p in (MIGRATIONS_DIR / "versions").glob("*.py")} - {p.name for p in files}
    assert others <= {"__init__.py"}


def test_a_server_older_than_postgresql_17_is_refused_before_any_migration_with_its_version() -> None:
    from rag_server.infra.migrations import unsupported_server

    assert unsupported_server(170000) is None
    assert unsupported_server(180004) is None
    said = unsupported_server(160009)
    assert said is not None
    assert said.startswith("the database server is PostgreSQL 16; rag-server needs PostgreSQL 17 or later")
