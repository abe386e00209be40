"""Chat search time for one key while other keys' chats hold the word (0031 vs 0032).

Usage: python chat_search_study.py OWNER_URL seed|time SERVICES_DIR (the tree whose list_sessions is
timed). Seed: 40 keys x 100 sessions x 10 messages (40,000 messages); every message of the 39 other keys
says 'budget'; one session of the searching key (study1) does. Timing connects as rag_runtime.
"""

import asyncio
import statistics
import sys
import time

import asyncpg

URL = sys.argv[1]
WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet"]


async def seed() -> None:
    c = await asyncpg.connect(URL)
    await c.execute("""
    INSERT INTO api_keys (name, role, all_collections, key_hash, key_prefix)
    SELECT 'study' || i, 'reader', true, decode(md5('study' || i), 'hex'), 'p' || i
    FROM generate_series(1, 40) i
    """)
    await c.execute("""
    INSERT INTO chat_sessions (title, owner_key_id)
    SELECT 'chat ' || n, k.id FROM api_keys k, generate_series(1, 100) n WHERE k.name LIKE 'study%'
    """)
    await c.execute(f"""
    INSERT INTO chat_messages (session_id, role, content)
    SELECT s.id, 'user',
           CASE WHEN k.name <> 'study1' OR s.title = 'chat 1' THEN 'our budget for ' ELSE 'the plan for ' END
           || (ARRAY{WORDS!r})[1 + (n % 10)] || ' number ' || n || ' ' || md5(s.id::text || n)
    FROM chat_sessions s JOIN api_keys k ON k.id = s.owner_key_id, generate_series(1, 10) n
    WHERE k.name LIKE 'study%'
    """)
    await c.execute("ANALYZE")
    await c.close()


async def timed(words: str, runs: int = 15) -> tuple[float, float, int]:
    sys.path[:0] = [sys.argv[3]]
    try:
        from rag_server.chat.session_listing import list_sessions
    except ImportError:
        from rag_server.chat.sessions import list_sessions
    owner = await asyncpg.connect(URL)
    key = await owner.fetchval("SELECT id FROM api_keys WHERE name = 'study1'")
    await owner.close()
    c = await asyncpg.connect(URL.replace("postgres:@", "rag_runtime:@"))
    times = []
    for _ in range(runs):
        async with c.transaction():
            await c.execute(
                "SELECT set_config('rag.collections', '*', true), set_config('rag.role', 'reader', true),"
                " set_config('rag.key_id', $1, true)",
                str(key),
            )
            t = time.perf_counter()
            _items, total = await list_sessions(c, limit=50, offset=0, include_archived=False, words=words)
            times.append((time.perf_counter() - t) * 1000)
    await c.close()
    return statistics.median(times), max(times), total


if sys.argv[2] == "seed":
    asyncio.run(seed())
else:
    for w in ("budget", "b", "budget alpha", "zzz"):
        med, worst, total = asyncio.run(timed(w))
        print(f"q={w!r:16} found {total:3}  median {med:7.1f} ms  max {worst:7.1f} ms")
