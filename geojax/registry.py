"""Promote, roll back and archive model versions served by TF Serving: the registry's command.

    python -m geojax.registry --base_path export/geojax list
    python -m geojax.registry --base_path export/geojax promote 3 --to staging
    python -m geojax.registry --base_path export/geojax promote 3 --to production
    python -m geojax.registry --base_path export/geojax rollback --stage production
    python -m geojax.registry --base_path export/geojax archive 1

Versions, the stages development -> staging -> (canary ->) production as TF Serving version
labels, and how a label move waits for the model server: `geojax.release.registry`. A user
error (an unknown version or stage, a refused promotion, a server that does not load the
version) exits 2 with `geojax.registry: ...` on stderr.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from geojax.core.errors import user_errors
from geojax.release.registry import STALE_INCOMING_SECONDS, Registry
from geojax.release.server_watch import AUTO_SERVER
from geojax.release.stages import REMOVABLE_STAGES, STAGES, format_table

PROG = "geojax.registry"
"""The name a user error's message starts with on stderr (`geojax.registry: ...`)."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m geojax.registry",
        description="Promote, roll back and archive model versions served by TF Serving.",
    )
    parser.add_argument("--base_path", default="export/geojax", help="model base path")
    parser.add_argument("--config_file", default="serving/models.config")
    parser.add_argument("--model_name", default="geojax")
    parser.add_argument("--serving_base_path", default=None, help="base path as TF Serving sees it")
    parser.add_argument(
        "--server", default=AUTO_SERVER,
        help="model server gRPC host:port to wait at until a version is AVAILABLE before a "
             "label moves to it; 'auto' (default): $GEOJAX_MODEL_SERVER or localhost:8500 if "
             "a server listens there; 'none': never wait (the config is for the next start)")
    parser.add_argument("--poll_wait_seconds", type=float, default=0.0)
    parser.add_argument("--load_timeout_seconds", type=float, default=300.0)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="versions, stages, metrics")
    promote = commands.add_parser("promote", help="point a stage's label at a version")
    promote.add_argument("version", type=int)
    promote.add_argument("--to", required=True, help="|".join(STAGES))
    promote.add_argument("--force", action="store_true", help="override the metrics gate")
    promote.add_argument("--reason", default="", help="why (required with --force)")
    rollback = commands.add_parser("rollback", help="point a stage back at its previous version")
    rollback.add_argument("--stage", required=True, help="|".join(STAGES))
    remove = commands.add_parser("remove", help="point the canary label at no version "
                                 "(the trial is over)")
    remove.add_argument("--stage", required=True, help="|".join(REMOVABLE_STAGES))
    archive = commands.add_parser("archive", help="move an unlabelled version out of serving")
    archive.add_argument("version", type=int)
    gc = commands.add_parser("gc", help="delete incoming dirs left by exports that died")
    gc.add_argument("--max_age_seconds", type=float, default=STALE_INCOMING_SECONDS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """The CLI; returns 0, or exits 2 with `geojax.registry: ...` on stderr for a user error."""
    args = _parser().parse_args(argv)
    logging.basicConfig(format="%(message)s")
    registry = Registry(
        args.base_path,
        args.config_file,
        args.model_name,
        args.serving_base_path,
        server=None if args.server == "none" else args.server,
        poll_wait_seconds=args.poll_wait_seconds,
        load_timeout_seconds=args.load_timeout_seconds,
    )
    with user_errors(PROG, OSError):
        if args.command == "list":
            print(format_table(registry.versions()))
        elif args.command == "promote":
            registry.promote(args.version, args.to, force=args.force, reason=args.reason)
            print(f"{args.to} -> version {args.version}")
        elif args.command == "rollback":
            print(f"{args.stage} -> version {registry.rollback(args.stage)}")
        elif args.command == "remove":
            print(f"{args.stage} -> no version (was {registry.remove_label(args.stage)})")
        elif args.command == "archive":
            registry.archive(args.version)
            print(f"archived version {args.version}")
        elif args.command == "gc":
            for path in registry.gc(args.max_age_seconds):
                print(f"removed {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
