"""The role the server and workers connect as (docs/decisions/0010-access-control.md).

Not a superuser, no BYPASSRLS, owns nothing: the row-level security policies apply to it. Created if
missing (roles are cluster-wide), granted what the runtime needs in this database, its password set
when one is configured. Our SECURITY DEFINER functions (they read what the policies hide: keys, other
keys' sessions) are executable by this role alone: PostgreSQL gives every new function to PUBLIC, so
any role of a shared cluster could call them. Runs after every migration run, as the owner and under
the migrations' advisory lock (concurrent GRANTs on one object fail), so the tables and functions of
later migrations are granted too.
"""

from __future__ import annotations

from typing import Any

from psycopg import errors, sql

from rag_server.infra.migrations import DEFINER_FUNCTIONS_WHERE

RUNTIME_ROLE_ATTRIBUTES = "LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE"


def ensure_runtime_role(conn: Any, role: str, password: str | None) -> None:
    """`conn`: the migrations' psycopg connection (the owner's)."""
    name = sql.Identifier(role)
    if conn.execute("SELECT current_user = %s", (role,)).fetchone()[0]:
        raise RuntimeError(
            f"DATABASE_URL must connect as the tables' owner, not as the runtime role {role!r}"
        )
    if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone() is None:
        try:
            with conn.transaction():
                conn.execute(sql.SQL("CREATE ROLE {} " + RUNTIME_ROLE_ATTRIBUTES).format(name))
        except errors.DuplicateObject:
            pass  # another database of this cluster created it at the same moment
    super_, bypass = conn.execute(
        "SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = %s", (role,)
    ).fetchone()
    if super_ or bypass:
        raise RuntimeError(f"the runtime role {role!r} must be neither a superuser nor BYPASSRLS")
    if password is not None:
        conn.execute(sql.SQL("ALTER ROLE {} LOGIN PASSWORD {}").format(name, sql.Literal(password)))
    schemas = [sql.Identifier("public")]
    if conn.execute("SELECT to_regnamespace('pgmq')").fetchone()[0] is not None:
        schemas.append(sql.Identifier("pgmq"))
    database = sql.Identifier(conn.execute("SELECT current_database()").fetchone()[0])
    grants = sql.SQL(
        """
        GRANT CONNECT ON DATABASE {database} TO {role};
        GRANT USAGE ON SCHEMA {schemas} TO {role};
        GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {schemas} TO {role};
        GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {schemas} TO {role};
        REVOKE INSERT, UPDATE, DELETE ON alembic_version FROM {role};
        """
    ).format(database=database, schemas=sql.SQL(", ").join(schemas), role=name)
    conn.execute(grants)
    for (function,) in conn.execute(_DEFINER_FUNCTIONS).fetchall():
        conn.execute(
            sql.SQL(
                "REVOKE EXECUTE ON FUNCTION {f} FROM PUBLIC; GRANT EXECUTE ON FUNCTION {f} TO {role}"
            ).format(f=sql.SQL(function), role=name)
        )


_DEFINER_FUNCTIONS = (
    f"SELECT p.oid::regprocedure::text FROM pg_proc p WHERE {DEFINER_FUNCTIONS_WHERE} ORDER BY 1"
)
