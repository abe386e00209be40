"""`python -m tests.chaos` (`just chaos`): one fault-injection run; its figures, exit 1 on a violation."""

from __future__ import annotations

import argparse
import logging
import sys

from tests.chaos.runner import ChaosConfig, run_chaos


def main(argv: list[str] | None = None) -> int:
    defaults = ChaosConfig()
    p = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__)
    p.add_argument("--documents", type=int, default=defaults.documents)
    p.add_argument("--duration", type=float, default=defaults.duration_s, help="fault phase, seconds")
    p.add_argument("--worker-kills", type=int, default=defaults.worker_kills)
    p.add_argument("--pg-crashes", type=int, default=defaults.pg_crashes)
    p.add_argument("--embedder-outages", type=int, default=defaults.embedder_outages)
    p.add_argument("--server-kills", type=int, default=defaults.server_kills)
    p.add_argument("--quiesce-timeout", type=float, default=defaults.quiesce_timeout_s)
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument("--keep", action="store_true", help="keep the run's directory (database, logs)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = ChaosConfig(
        documents=args.documents,
        duration_s=args.duration,
        worker_kills=args.worker_kills,
        pg_crashes=args.pg_crashes,
        embedder_outages=args.embedder_outages,
        server_kills=args.server_kills,
        quiesce_timeout_s=args.quiesce_timeout,
        seed=args.seed,
        keep=args.keep,
    )
    result = run_chaos(config)
    print("\n".join(result.lines()))
    if result.violations or args.keep:
        print(f"run directory (database, process logs): {result.directory}")
    return 1 if result.violations else 0


if __name__ == "__main__":
    sys.exit(main())
