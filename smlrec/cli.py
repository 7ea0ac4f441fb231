"""The ``smlrec`` command: serve, worker, migrate, bootstrap, import, replay, tune, load.

``smlrec serve`` runs the HTTP service (with the worker in a child process, or
on a thread with ``SMLREC_WORKER_MODE=thread``, unless ``--no-worker``);
``smlrec worker`` runs the worker alone (distributed mode: one leads, the
others stand by); ``smlrec migrate`` brings the database schema up to date;
``smlrec bootstrap`` warms the SML transfer by an offline replay of the stored
periods; ``smlrec import`` backfills history, cut into periods as it says;
``smlrec replay`` runs the paper's experiments (``sml.replay``) and ``smlrec tune``
chooses their hyper-parameters on a log's validation periods (``sml.tune``);
``smlrec load`` replays a data set against a running service.

A process that cannot start (a bad setting, a taken port, a database or Redis
that does not answer) says why in one line on stderr and exits with status 1
(2 for a bad setting or argument).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from pydantic import ValidationError

from smlrec.logs import configure_logging
from smlrec.preflight import StartupError
from smlrec.settings import Settings, get_settings, setting_errors

log = logging.getLogger("smlrec")

SETTINGS_NOTE = ("Settings come from SMLREC_* environment variables; the README's "
                 "settings table lists them all.")


def _version() -> str:
    try:
        return importlib.metadata.version("smlrec")
    except importlib.metadata.PackageNotFoundError:  # run from a checkout, not installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="smlrec",
        description="A recommender service kept fresh by Sequential Meta-Learning retraining.",
        epilog=SETTINGS_NOTE,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve", help="run the HTTP service",
        description="Run the HTTP service: recommendations, interaction logging and the "
        "admin endpoints, on SMLREC_DATABASE_URL (SQLite by default), with the "
        "retraining worker beside it unless --no-worker. " + SETTINGS_NOTE)
    serve.add_argument("--host", help="bind address (default: SMLREC_HOST)")
    serve.add_argument("--port", type=int, help="port (default: SMLREC_PORT)")
    serve.add_argument(
        "--no-worker",
        action="store_true",
        help="serve only (an API replica; a separate `smlrec worker` retrains); "
        "without it the worker runs beside the server (SMLREC_WORKER_MODE)",
    )

    commands.add_parser(
        "worker", help="run the retraining worker (leader election via Redis)",
        description="Run the retraining worker alone (distributed mode): it drains the "
        "Redis stream (SMLREC_REDIS_URL) into the database (SMLREC_DATABASE_URL), cuts "
        "periods (SMLREC_PERIOD) and retrains at each boundary. Several may run: one "
        "holds the lease and works, the others stand by. Stops on SIGTERM or Ctrl-C, "
        "after the boundary under way. " + SETTINGS_NOTE)
    commands.add_parser(
        "migrate", help="bring the database schema up to date",
        description="Apply the Alembic migrations to SMLREC_DATABASE_URL (the service and "
        "the worker also do it when they start). " + SETTINGS_NOTE)
    commands.add_parser(
        "bootstrap", help="warm the SML transfer by an offline replay of the stored periods",
        description="Replay the closed periods in the database through SML offline, so the "
        "transfer starts trained rather than untrained; its state becomes the worker's "
        "checkpoint and its model the new active version. It holds the worker lease while "
        "it runs: in embedded mode stop the server first. " + SETTINGS_NOTE)
    commands.add_parser(
        "replay",
        add_help=False,
        help="the paper's experiments (arguments go to sml.replay; see --help)",
    )
    commands.add_parser(
        "tune",
        add_help=False,
        help="choose hyper-parameters on a log's validation periods (see --help)",
    )

    _add_import(commands)
    _add_load(commands)
    return parser


def _add_import(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    backfill = commands.add_parser(
        "import",
        help="backfill historical interactions (CSV or NDJSON), cut into periods",
        description="Backfill history before live traffic: the file's interactions, in "
        "event-time order, are stored and cut into closed periods (each with its retrain "
        "queued), as --periods says. The open period must be empty (no live interaction "
        "yet, or right after a retrain). Timestamps beyond now + SMLREC_MAX_CLOCK_SKEW_SECONDS "
        "are refused.",
    )
    backfill.add_argument("path", help="CSV with a header (user_id,item_id,timestamp"
                          "[,event_id]) or NDJSON of the same fields")
    backfill.add_argument(
        "--periods", default="one", metavar="RULE",
        help="how the history is cut: 'time:DURATION' (windows of event time, e.g. time:1d), "
        "'count:N' (N interactions each) or 'one' (a single period; default)")


def _add_load(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    load = commands.add_parser("load", help="replay a data set against a running service")
    load.add_argument(
        "--dataset", default="ml-100k", help="ml-100k, synthetic, or a data file (default: ml-100k)"
    )
    load.add_argument("--url", default="http://127.0.0.1:8000", help="the service's base URL")
    load.add_argument(
        "--period-size",
        type=int,
        default=5000,
        help="interactions per period: a retrain is asked after each",
    )
    load.add_argument("--admin-token", help="admin token (default: SMLREC_ADMIN_TOKEN, else "
                      "the one in SMLREC_ADMIN_TOKEN_FILE that `smlrec serve` generated)")
    load.add_argument("--api-key", help="client key (default: SMLREC_API_KEY)")
    load.add_argument("--limit-periods", type=int, help="stop after this many periods")


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if args_list[:1] in (["replay"], ["tune"]):
        return _offline(args_list[0], args_list[1:])
    args = parser.parse_args(args_list)
    try:
        settings = get_settings()
    except ValidationError as error:
        parser.exit(2, f"smlrec: invalid configuration: {setting_errors(error)}\n")
    configure_logging(settings.log_level, settings.log_format)
    try:
        return _run(args, settings)
    except StartupError as error:
        parser.exit(1, f"smlrec: {error}\n")


def _run(args: argparse.Namespace, settings: Settings) -> int:
    if args.command == "serve":
        return serve(settings, host=args.host, port=args.port, with_worker=not args.no_worker)
    if args.command == "worker":
        return run_worker(settings)
    if args.command == "migrate":
        return migrate(settings)
    if args.command == "bootstrap":
        return bootstrap_command(settings)
    if args.command == "import":
        return run_import(settings, args.path, args.periods)
    if args.command == "load":
        return load(settings, args)
    raise StartupError(f"unknown command {args.command!r}")


def _offline(command: str, argv: list[str]) -> int:
    """The method's own command lines; they read no service setting."""
    configure_logging("INFO")
    if command == "tune":
        from sml import tune

        return tune.main(argv)
    from sml import replay

    return replay.main(argv)


SHUTDOWN_GRACE_S = 3  # requests in flight get this long on SIGTERM; then the teardown


def serve(settings: Settings, host: str | None, port: int | None, with_worker: bool) -> int:
    import uvicorn

    from smlrec import preflight

    updates = {k: v for k, v in (("host", host), ("port", port)) if v is not None}
    settings = settings.model_copy(update=updates)
    preflight.check_admin_token(settings)
    sock = preflight.bind(settings.host, settings.port)  # before migrations or a token
    try:
        preflight.check_database(settings)
        preflight.check_redis(settings)
        # resolved once here: a token file that cannot be written fails in one line
        settings = settings.model_copy(
            update={"admin_token": preflight.resolve_admin_token(settings)})
        from smlrec.app import create_app  # torch and the rest: once the checks pass

        app = create_app(settings, run_worker=with_worker)
        server = uvicorn.Server(uvicorn.Config(
            app,
            log_config=None,  # configured once in main()
            log_level=settings.log_level.lower(),
            access_log=False,  # the service logs its own access lines
            timeout_graceful_shutdown=SHUTDOWN_GRACE_S,
        ))
        server.run(sockets=[sock])
    finally:
        sock.close()
    return 0


class _StopOnSignal:
    """First SIGTERM/SIGINT: set ``stop`` (warm: the current step finishes).
    Second: leave at once (the lease lapses; a running job goes stale and is
    retrained by the next leader)."""

    def __init__(self, stop: threading.Event) -> None:
        self.stop = stop

    def __call__(self, signum: int, _frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if not self.stop.is_set():
            log.info("%s: stopping after the current step (again to stop now)", name)
            self.stop.set()
            return
        log.warning("%s again: stopping now", name)
        raise SystemExit(128 + signum)


def run_worker(settings: Settings) -> int:
    from smlrec import preflight
    from store import ArtifactStore, Store, make_bus
    from worker.runner import Worker

    if not settings.redis_url:
        raise StartupError(
            "smlrec worker needs SMLREC_REDIS_URL (distributed mode): without Redis nothing "
            "keeps a second worker from leading, and embedded mode runs its worker inside "
            "smlrec serve")
    preflight.check_database(settings)
    preflight.check_redis(settings)
    store = Store.from_url(settings.database_url)
    bus = make_bus(settings)
    stop = threading.Event()
    handler = _StopOnSignal(stop)
    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    try:
        Worker(settings, store, bus, ArtifactStore(settings.model_dir)).work(stop)
    finally:
        bus.close()
        store.close()
    return 0


def migrate(settings: Settings) -> int:
    from smlrec import preflight
    from store.migrate import upgrade

    preflight.check_database(settings)
    upgrade(settings.database_url)
    settings.model_dir.mkdir(parents=True, exist_ok=True)
    log.info("database is up to date")
    return 0


def bootstrap_command(settings: Settings) -> int:
    from worker.bootstrap import WorkerBusy, bootstrap

    try:
        version = bootstrap(settings)
    except WorkerBusy as error:
        log.error("%s", error)
        return 1
    if version is None:
        log.warning("nothing to bootstrap from: no closed period")
        return 1
    log.info("bootstrap done: version %d is active", version)
    return 0


def run_import(settings: Settings, path: str, periods: str) -> int:
    from smlrec.backfill import BackfillError, backfill

    try:
        closed = backfill(settings, path, periods)
    except (BackfillError, OSError) as error:
        raise StartupError(str(error)) from None
    log.info("imported %d periods; their retrains are queued", len(closed))
    return 0


def _stored_token(settings: Settings) -> str | None:
    """The admin token an embedded service generated and keeps in its file, if any."""
    from smlrec.preflight import read_admin_token

    try:
        return read_admin_token(settings.admin_token_file)
    except OSError:  # unreadable: the loader goes on without one
        return None


def load(settings: Settings, args: argparse.Namespace) -> int:
    from smlrec.load import LoadConfig, LoadError, run_load

    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request: too chatty
    config = LoadConfig(
        dataset=args.dataset,
        url=args.url,
        period_size=args.period_size,
        admin_token=args.admin_token or settings.admin_token or _stored_token(settings),
        api_key=args.api_key or settings.api_key,
        limit_periods=args.limit_periods,
    )
    try:
        run_load(config)
    except (LoadError, ValueError) as error:
        log.error("%s", error)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
