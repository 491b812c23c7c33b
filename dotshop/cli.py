"""The `dotshop` command. Each part of the stack is a subcommand configured by the environment
(and by a running stack's `.dotshop/stack.json`). Parts not built yet say so and exit 2.

It imports the packages it runs lazily, inside the commands that run them, so `dotshop --help`
is quick; none of them imports this package.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from infra.local.regions import RegionStack

app = typer.Typer(
    help="dotshop: checkout, order ledger and payment audit trail for a Shopify + Stripe store.",
    no_args_is_help=True,
    add_completion=False,
)
checks_app = typer.Typer(help="Invariant checks (oversell, drift, unreconciled payments).")
app.add_typer(checks_app, name="checks")
outbox_app = typer.Typer(help="Outbox dead letters: list, retry, discard (audit-logged).")
app.add_typer(outbox_app, name="outbox")
dashboards_app = typer.Typer(help="Grafana dashboards as code (dashboards/grafana/*.json).")
app.add_typer(dashboards_app, name="dashboards")


def fail(message: str, code: int = 2) -> None:
    """Print a clear message to stderr and exit (2 = bad usage or not available)."""
    typer.echo(f"dotshop: {message}", err=True)
    raise typer.Exit(code)


@contextmanager
def _clear_errors() -> Iterator[None]:
    """Turn configuration and start-up errors into one clear line and exit code 2."""
    from pydantic import ValidationError

    from core.errors import DotshopError

    try:
        yield
    except DotshopError as exc:
        fail(exc.message)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        fail(f"invalid settings: {problems}")


def _own_metrics(*, serve: bool) -> None:
    """A relay, sync, checks or console process keeps its metrics in a registry of its own,
    served on DOTSHOP_METRICS_PORT when `serve`. Called before anything imports
    prometheus_client, which reads PROMETHEUS_MULTIPROC_DIR once: one inherited from an API
    would send this process's samples into the API's files."""
    import os

    os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    if serve:
        from core.metrics import serve_metrics
        from core.settings import get_settings

        serve_metrics(get_settings().metrics_port)


def not_built(what: str) -> None:
    fail(f"`{what}` is not built yet (see the open issues); nothing was done.")


@app.command()
def migrate() -> None:
    """Apply database migrations (DATABASE_URL, or the embedded PostgreSQL)."""
    from core.db import database_url
    from core.migrate import head_revision, upgrade

    with _clear_errors():
        upgrade(database_url())
    typer.echo(f"database migrated to {head_revision()}")


@app.command()
def up(
    detach: Annotated[
        bool, typer.Option("--detach", help="Return once every part is healthy.")
    ] = False,
    supervised: Annotated[
        bool, typer.Option("--supervised", hidden=True, help="Run as the detached supervisor.")
    ] = False,
    demo_orders: Annotated[
        bool,
        typer.Option(
            "--demo-orders/--no-demo-orders",
            help="On a first start, place and pay a few demo orders for the console to show.",
        ),
    ] = True,
    monitoring: Annotated[
        bool,
        typer.Option(
            "--monitoring",
            help="Also run Prometheus (our rules, every part scraped) and Alertmanager "
            "(apt-get install prometheus prometheus-alertmanager).",
        ),
    ] = False,
    regions: Annotated[
        str | None,
        typer.Option(
            "--regions",
            help="Two regions, the primary first (us,eu): a primary PostgreSQL and a "
            "synchronous streaming replica, each region's API reading its own.",
        ),
    ] = None,
    rtt_ms: Annotated[
        float,
        typer.Option(
            "--rtt-ms", min=0, max=2000, help="With --regions: round trip between the regions."
        ),
    ] = 80.0,
) -> None:
    """Run the whole stack on this machine with embedded defaults, restarting any part that
    exits (Ctrl-C stops it)."""
    from dotshop import stack

    chosen = _regions(regions) if regions is not None else ()
    with _clear_errors():
        stack.up(
            detach=detach,
            supervised=supervised,
            demo_orders=demo_orders,
            monitoring=monitoring,
            regions=chosen,
            rtt_ms=rtt_ms,
        )


@app.command()
def down() -> None:
    """Stop a stack started with `dotshop up --detach`."""
    from dotshop import stack

    stack.down()


@app.command()
def api(
    host: str = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port (default 8000).")] = 8000,
    workers: Annotated[
        int | None,
        typer.Option(min=1, help="Worker processes sharing the port (default: one per core)."),
    ] = None,
) -> None:
    """Run the checkout API (Litestar) for DOTSHOP_REGION."""
    from checkout_api.server import serve

    with _clear_errors():
        serve(host=host, port=port, workers=workers)


@app.command()
def relay(once: Annotated[bool, typer.Option("--once")] = False) -> None:
    """Run the outbox relay (side effects in per-key order) and the expiry sweeper."""
    with _clear_errors():
        _own_metrics(serve=not once)
    from core import logs
    from core.worker import run_relay

    logs.configure()
    with _clear_errors():
        run_relay(once=once)


@app.command()
def sync(
    once: Annotated[bool, typer.Option("--once")] = False,
    full: Annotated[
        bool, typer.Option("--full", help="Repair everything now (a Shopify bulk operation).")
    ] = False,
) -> None:
    """Keep the catalog projection in step with Shopify: a full repair on first start (or with
    --full), then what changed since the last one, periodically."""
    import contextlib

    with _clear_errors():
        _own_metrics(serve=not once)
    from core import logs
    from core.worker import run_sync

    logs.configure()
    with _clear_errors(), contextlib.ExitStack() as stack:
        progress = None
        if sys.stderr.isatty():
            from rich.progress import Progress

            bar = stack.enter_context(Progress(transient=True))
            tasks: dict[str, int] = {}

            def progress(phase: str, done: int, total: int) -> None:
                if phase not in tasks:
                    tasks[phase] = bar.add_task(f"Shopify {phase}", total=total)
                bar.update(tasks[phase], completed=done, total=total)

        run_sync(once=once, full=full, progress=progress)


def _operator() -> str:
    """Who acts, for the audit log: the operating-system user running the command."""
    import getpass

    return f"cli:{getpass.getuser()}"


def _outbox_action(public_id: str, action: str, reason: str | None) -> None:
    from core import relay
    from core.db import database_url, engine_for, transaction

    reason = (reason or "").strip() or None
    if action == "discard" and reason is None:
        fail("--reason must say why the message is discarded")
    act = relay.discard_dead if action == "discard" else relay.retry_dead
    with _clear_errors(), transaction(engine_for(database_url())) as session:
        if not act(session, public_id, actor=_operator(), reason=reason):
            fail(f"no dead outbox message {public_id}")
    typer.echo(f"{public_id}: {'discarded' if action == 'discard' else 'pending again'}")


@outbox_app.command("list")
def outbox_list(
    status: Annotated[str, typer.Option(help="pending, sent, dead or discarded.")] = "dead",
    limit: Annotated[int, typer.Option(help="At most this many (1-1000).")] = 100,
) -> None:
    """List outbox messages, oldest first (dead letters by default)."""
    from sqlalchemy.orm import Session

    from core import relay
    from core.db import database_url, engine_for

    with _clear_errors(), Session(engine_for(database_url())) as session:
        views = relay.list_messages(session, status, limit)
    for v in views:
        error = (v.last_error or "").splitlines()[0][:80] if v.last_error else ""
        typer.echo(f"{v.id}  {v.topic}  {v.ordering_key}  attempts={v.attempts}  {error}")
    typer.echo(f"{len(views)} {status} message(s)", err=True)


@outbox_app.command("retry")
def outbox_retry(
    public_id: str,
    reason: Annotated[str | None, typer.Option(help="Why (kept in the audit log).")] = None,
) -> None:
    """Put a dead letter back in the queue (attempts reset)."""
    _outbox_action(public_id, "retry", reason)


@outbox_app.command("discard")
def outbox_discard(
    public_id: str,
    reason: Annotated[str, typer.Option(help="Why it is given up (kept in the audit log).")],
) -> None:
    """Give up a dead letter for good; it stops blocking its ordering key."""
    _outbox_action(public_id, "discard", reason)


@checks_app.command("run")
def checks_run(
    once: Annotated[
        bool, typer.Option("--once", help="One run of the checks, then exit (see below).")
    ] = False,
    check: Annotated[
        list[str] | None, typer.Option("--check", help="Only this check (repeatable).")
    ] = None,
) -> None:
    """Run the invariant checks: each on its own interval until Ctrl-C, or with --once a single
    run that prints the open violations (check, subject, money, since) and exits 0 when none is
    open, 1 when one is open or a check could not run, 2 on bad usage."""
    with _clear_errors():
        _own_metrics(serve=not once)
    from checks import runner, scheduler
    from core import logs
    from core.db import database_url, engine_for
    from core.settings import get_settings

    logs.configure()
    with _clear_errors():
        settings = get_settings()
        engine = engine_for(database_url(settings))
        if not once:
            if check:
                fail("--check needs --once (the scheduler runs every check)")
            scheduler.run(engine, settings)
            return
        run = runner.run_checks(engine, settings, names=check)
    for v in run.violations:
        money = f"{v.amount_minor} {v.currency}" if v.amount_minor is not None else "-"
        typer.echo(f"{v.check_name}  {v.subject}  {money}  since {v.first_seen.isoformat()}")
    failed = {name: r["error"] for name, r in run.results.items() if "error" in r}
    for name, error in failed.items():
        typer.echo(f"{name}: could not run: {error}", err=True)
    typer.echo(f"run {run.run_id}: {run.status}, {len(run.violations)} open violation(s)", err=True)
    if run.violations or failed:
        raise typer.Exit(1)


@dashboards_app.command("build")
def dashboards_build(
    out: Annotated[Path, typer.Option("--out", help="Folder of the JSON files.")] = Path(
        "dashboards/grafana"
    ),
    check: Annotated[
        bool, typer.Option("--check", help="Write nothing; exit 1 naming the stale files.")
    ] = False,
) -> None:
    """Generate the Grafana dashboards (Checkout, Sync, Payments, Inventory) as JSON, or with
    --check verify that the committed files match what the code builds (CI's up-to-date check)."""
    from dotshop import dashboards

    if check:
        stale = dashboards.stale(out)
        for path in stale:
            typer.echo(f"stale: {path} (run `dotshop dashboards build`)", err=True)
        if stale:
            raise typer.Exit(1)
        typer.echo(f"{len(dashboards.DASHBOARDS)} dashboard(s) in {out} are up to date")
        return
    for path in dashboards.build(out):
        typer.echo(f"wrote {path}")


@app.command()
def console(
    host: str = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port (default 8501).")] = 8501,
    hash_password: Annotated[
        bool,
        typer.Option(
            "--hash-password",
            help="Read a password on stdin, print its argon2 hash for DOTSHOP_CONSOLE_USERS.",
        ),
    ] = False,
) -> None:
    """Run the Streamlit operator console (sign-in: DOTSHOP_CONSOLE_USERS, or OIDC)."""
    import os

    from core import operators
    from core.settings import Settings

    with _clear_errors():
        if hash_password:
            typer.echo(operators.hash_password(sys.stdin.readline().rstrip("\n")))
            return
        users = Settings().console_users
        accounts = operators.parse_accounts(users.get_secret_value() if users else None)
        if not accounts and not Path(".streamlit/secrets.toml").exists():
            fail("no operator can sign in: set DOTSHOP_CONSOLE_USERS (or configure OIDC)")
    # streamlit serves DOTSHOP_METRICS_PORT itself, from its first script run (console.data).
    _own_metrics(serve=False)
    app_path = Path(__file__).resolve().parents[1] / "console" / "app.py"
    # streamlit replaces this process, so a supervisor's signals reach it directly.
    os.execv(  # noqa: S606 - argv list, no shell
        sys.executable,
        [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            str(app_path),
            f"--server.address={host}",
            f"--server.port={port}",
            "--server.headless=true",
            "--browser.gatherUsageStats=false",
            "--server.fileWatcherType=none",
            "--client.toolbarMode=minimal",
        ],
    )


@app.command()
def sandbox(
    stripe_port: int = 12111,
    shopify_port: int = 12112,
    seed: Annotated[int, typer.Option(help="Seed for fault injection.")] = 0,
    stripe_webhook_url: Annotated[
        str | None, typer.Option(help="Deliver Stripe events here (signed).")
    ] = None,
    stripe_webhook_event: Annotated[
        list[str] | None,
        typer.Option(
            help="An event type the --stripe-webhook-url endpoint receives (repeatable; its "
            "enabled_events). Default: every event."
        ),
    ] = None,
    shopify_webhook_url: Annotated[
        str | None, typer.Option(help="Subscribe every Shopify topic to this address.")
    ] = None,
    demo_catalog: Annotated[bool, typer.Option(help="Seed the demo catalog.")] = True,
    fault: Annotated[
        list[str] | None,
        typer.Option(
            help="A fault both stand-ins start with, KEY=VALUE (repeatable), e.g. "
            "error_rate=0.1, error_status=503, latency_ms=50, webhook_duplicate_rate=0.5, "
            "webhook_reorder=true. Change them later through POST /_sandbox/faults."
        ),
    ] = None,
    settlement_currency: Annotated[
        list[str] | None,
        typer.Option(
            help="A currency the sandbox Stripe account settles in (repeatable; the first is its "
            "default, others convert into it). Default: usd, a US account."
        ),
    ] = None,
) -> None:
    """Run the sandbox Stripe and Shopify servers (credentials from the environment)."""
    import os

    from sandbox.options import SandboxOptions
    from sandbox.server import serve

    faults = _parse_faults(fault or [])
    defaults = SandboxOptions()
    options = SandboxOptions(
        seed=seed,
        stripe_api_key=os.environ.get("STRIPE_API_KEY", defaults.stripe_api_key),
        stripe_webhook_url=stripe_webhook_url,
        stripe_webhook_events=tuple(stripe_webhook_event or ()) or defaults.stripe_webhook_events,
        stripe_webhook_secret=os.environ.get(
            "STRIPE_WEBHOOK_SECRET", defaults.stripe_webhook_secret
        ),
        shopify_access_token=os.environ.get("SHOPIFY_ACCESS_TOKEN", defaults.shopify_access_token),
        shopify_api_secret=os.environ.get("SHOPIFY_API_SECRET", defaults.shopify_api_secret),
        shopify_shop=os.environ.get("SHOPIFY_SHOP", defaults.shopify_shop),
        shopify_webhook_url=shopify_webhook_url,
        demo_catalog=demo_catalog,
        faults=faults,
        stripe_settlement_currencies=tuple(c.lower() for c in settlement_currency or ())
        or defaults.stripe_settlement_currencies,
    )
    from sandbox.faults import Faults

    try:
        Faults(seed, faults)  # refuse bad settings here, with a clear message
    except (TypeError, ValueError) as exc:
        fail(f"invalid --fault: {exc}")
    serve(stripe_port=stripe_port, shopify_port=shopify_port, options=options)


def _parse_faults(pairs: list[str]) -> dict[str, object]:
    import json

    faults: dict[str, object] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            fail(f"--fault takes KEY=VALUE, not {pair!r}")
        try:
            faults[key] = json.loads(raw)
        except ValueError:
            faults[key] = raw
    return faults


reconcile_bench_app = typer.Typer(add_completion=False)


@reconcile_bench_app.command()
def bench_reconcile(
    payments: Annotated[
        int, typer.Option("--payments", min=1, help="How many synthetic payments to match.")
    ] = 20_000,
) -> None:
    """Set-based payment matching on N synthetic payments in a scratch database (created on
    DATABASE_URL's server or the embedded one, dropped afterwards), against a plain COPY of the
    same rows; exits 1 unless every seeded mismatch was found."""
    from core.reconcile_bench import main

    with _clear_errors():
        code = main(payments)
    raise typer.Exit(code)


checkout_bench_app = typer.Typer(add_completion=False)


@checkout_bench_app.command()
def bench_checkout(
    quick: Annotated[
        bool, typer.Option("--quick", help="CI: brief arms, 8 clients; checks correctness only.")
    ] = False,
    seconds: Annotated[
        float | None, typer.Option("--seconds", min=1, help="Length of each arm (default 10).")
    ] = None,
    workers: Annotated[
        int | None, typer.Option("--workers", min=1, help="API workers (default: one per core).")
    ] = None,
    out: Annotated[Path, typer.Option("--out", help="Where checkout-<date>.json goes.")] = Path(
        "bench/results"
    ),
) -> None:
    """The checkout side by side with its floor (the least a correct checkout does, same
    server) and its limit (pgbench on our stock statement): throughput, p50/p95/p99, errors,
    ratios; reads; end to end to paid and pushed. Starts its own PostgreSQL, sandbox, API and
    relay on loopback and stops them. Exits 1 when a correctness check fails (oversell, an
    order missing or duplicated, an error, an arm that did not run)."""
    from checkout_api.server import default_workers
    from dotshop.bench.runner import main

    with _clear_errors():
        code = main(quick=quick, seconds=seconds, workers=workers or default_workers(), out_dir=out)
    raise typer.Exit(code)


console_bench_app = typer.Typer(add_completion=False)


@console_bench_app.command()
def bench_console(
    orders: Annotated[
        int, typer.Option("--orders", min=1, help="How many synthetic orders to load.")
    ] = 20_000,
) -> None:
    """Render every console page on N synthetic orders in a scratch database (created on
    DATABASE_URL's server or the embedded one, dropped afterwards), cold and warm, against the
    sign-in page rendered by the same runtime."""
    from console.bench import main

    with _clear_errors():
        code = main(orders)
    raise typer.Exit(code)


BENCHES = {
    "reconcile": reconcile_bench_app,
    "checkout": checkout_bench_app,
    "console": console_bench_app,
}


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,  # `dotshop bench NAME --help` is the benchmark's own help
)
def bench(ctx: typer.Context) -> None:
    """Benchmarks that print ratios against a baseline run in the same process:
    `dotshop bench checkout [--quick]`, `dotshop bench reconcile [--payments N]`."""
    if ctx.args[:1] in ([], ["--help"]):
        typer.echo(ctx.get_help())
        raise typer.Exit()
    name = ctx.args[0]
    if name not in BENCHES:
        fail(f"`dotshop bench {name}` is not built yet; benchmarks: {', '.join(sorted(BENCHES))}")
    typer.main.get_command(BENCHES[name])(ctx.args[1:], prog_name=f"dotshop bench {name}")


drill_app = typer.Typer(
    help="Fault drills on a local two-region stack (infra/local): failover, latency.",
    no_args_is_help=True,
)
app.add_typer(drill_app, name="drill")

RttMs = Annotated[
    float,
    typer.Option(
        "--rtt-ms", min=0, max=2000, help="Round trip between the regions, in ms (delay proxy)."
    ),
]
Regions = Annotated[
    str, typer.Option("--regions", help="The two regions, the primary first (e.g. us,eu).")
]
DelayReplication = Annotated[
    bool,
    typer.Option(
        "--delay-replication",
        help="The standby streams across the delay proxy too, as between real regions: each "
        "synchronous commit then waits one RTT.",
    ),
]


def _regions(value: str) -> tuple[str, ...]:
    from infra.local.regions import parse_regions

    try:
        return parse_regions(value)
    except ValueError as exc:
        fail(f"--regions: {exc}")
        raise  # unreachable: fail() exits


@drill_app.command("failover")
def drill_failover(
    rtt_ms: RttMs = 80.0,
    regions: Regions = "us,eu",
    delay_replication: DelayReplication = False,
    shoppers: Annotated[
        int, typer.Option("--shoppers", min=1, max=16, help="Shoppers per region.")
    ] = 2,
    seconds: Annotated[
        float,
        typer.Option("--seconds", min=1, max=600, help="Traffic before the kill, and after."),
    ] = 10.0,
) -> None:
    """Checkout traffic in both regions; kill the primary, promote the standby, flip
    DOTSHOP_PRIMARY_REGION; print lost orders, paid orders vs PaymentIntents, RTO and oversold
    units. Starts its own stack on free ports and stops it. Exits 1 when an order was lost, a
    payment does not match, a unit was oversold or writes never came back."""
    from infra.local import drill

    with _drill_stack(regions, rtt_ms, delay_replication) as stack:
        report = drill.failover(
            stack,
            shoppers_per_region=shoppers,
            before_seconds=seconds,
            after_seconds=seconds,
            say=_say,
        )
    typer.echo(report.table())
    raise typer.Exit(0 if report.ok else 1)


@drill_app.command("latency")
def drill_latency(
    rtt_ms: RttMs = 80.0,
    regions: Regions = "us,eu",
    delay_replication: DelayReplication = False,
    checkouts: Annotated[
        int, typer.Option("--checkouts", min=10, max=100_000, help="Checkouts per measurement.")
    ] = 200,
) -> None:
    """Checkout p50/p99 per region at 0 and --rtt-ms between the regions, the round trips one
    remote checkout makes to the primary (counted on the wire) and the catalog reads that leave
    their region. Exits 1 when a remote checkout costs more than 2 round trips or a read leaves
    its region."""
    from infra.local import drill

    with _drill_stack(regions, rtt_ms, delay_replication) as stack:
        report = drill.latency(stack, checkouts=checkouts, say=_say)
    typer.echo(report.table())
    raise typer.Exit(0 if report.ok else 1)


def _say(line: str) -> None:
    typer.echo(f"drill: {line}", err=True)


@contextmanager
def _drill_stack(regions: str, rtt_ms: float, delay_replication: bool) -> Iterator[RegionStack]:
    """A drill's own two-region stack (infra/local/regions.py) on free ports, stopped after."""
    from infra.local import regions as local

    chosen = _regions(regions)
    with (
        _clear_errors(),
        local.running(
            chosen, rtt_ms=rtt_ms, say=_say, delay_replication=delay_replication
        ) as stack,
    ):
        yield stack


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
