"""Two regions on one machine: who reaches which database, and how (`Topology`), and the
processes that make them up (`RegionStack`).

Each region has its own database: the primary region the primary, the other its synchronous
standby. A region reaches its own database directly and the other region's through a delay
proxy (one per database, the distance between the regions). An API process gets, from the
topology and `DOTSHOP_PRIMARY_REGION` alone:
- `DATABASE_URL`: the primary, directly or through the proxy (every write);
- `DOTSHOP_READ_DATABASE_URL`: its own region's database (catalog reads never leave the
  region), or the primary once its own database is gone.
Failover is therefore a parameter: promote the standby, flip the primary region, restart the
APIs with the environment the topology gives them.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import httpx

from core.settings import REGIONS
from dotshop.supervisor import Child, Supervisor, free_port
from infra.local import replica
from infra.local.postgres import Server

SHOP = "dotshop-demo.myshopify.com"
LOCATION_ID = 1
# The API of each region, one worker: two regions, two PostgreSQL servers, the sandbox and the
# drill's shoppers share the machine.
API_WORKERS = 1
# A drill's checkouts call a local sandbox: 2 s is ample for one Stripe call, and a key locked
# by a request that died with the primary is free again after this x (retries + 1) + 10 s
# (core.idempotency.lock_timeout_for), within the drill.
DRILL_STRIPE_TIMEOUT_SECONDS = 2


def parse_regions(value: str) -> tuple[str, ...]:
    """`us,eu` -> ("us", "eu"): known regions, each once; the first is the primary."""
    regions = tuple(r.strip() for r in value.split(",") if r.strip())
    unknown = [r for r in regions if r not in REGIONS]
    if unknown:
        raise ValueError(f"unknown region(s) {', '.join(unknown)}; known: {', '.join(REGIONS)}")
    if len(regions) != 2 or len(set(regions)) != 2:
        raise ValueError("name two different regions, the primary first, e.g. us,eu")
    return regions


@dataclass(frozen=True)
class Topology:
    regions: tuple[str, ...]
    primary: str
    databases: dict[str, Server]  # each region's own server
    proxy_ports: dict[str, int]  # where the other region reaches a region's server
    lost: frozenset[str] = frozenset()  # regions whose database is gone

    def reach(self, from_region: str, to_region: str) -> str:
        server = self.databases[to_region]
        if from_region == to_region:
            return server.url()
        return server.url(port=self.proxy_ports[to_region])

    def api_env(self, region: str) -> dict[str, str]:
        write = self.reach(region, self.primary)
        read = write if region in self.lost else self.reach(region, region)
        return {
            "DOTSHOP_REGION": region,
            "DOTSHOP_PRIMARY_REGION": self.primary,
            "DATABASE_URL": write,
            "DOTSHOP_READ_DATABASE_URL": read,
        }

    def standby_region(self) -> str:
        return next(r for r in self.regions if r != self.primary and r not in self.lost)

    def failed_over(self) -> Topology:
        """The standby's region is the primary; the old primary's database is gone."""
        return replace(self, primary=self.standby_region(), lost=self.lost | {self.primary})


@dataclass
class Ports:
    databases: dict[str, int]
    proxies: dict[str, int]
    controls: dict[str, int]
    apis: dict[str, int]
    stripe: int
    shopify: int

    @classmethod
    def free(cls, regions: tuple[str, ...]) -> Ports:
        """Ports nobody listens on (tests and drills never collide with a `dotshop up`)."""

        def each() -> dict[str, int]:
            return {r: free_port() for r in regions}

        return cls(each(), each(), each(), each(), free_port(), free_port())


@dataclass
class Secrets:
    stripe_api_key: str = field(default_factory=lambda: f"sk_test_{secrets.token_hex(16)}")
    stripe_webhook_secret: str = field(default_factory=lambda: f"whsec_{secrets.token_hex(16)}")
    shopify_access_token: str = field(default_factory=lambda: f"shpat_{secrets.token_hex(16)}")
    shopify_api_secret: str = field(default_factory=lambda: f"shpss_{secrets.token_hex(16)}")
    admin_token: str = field(default_factory=lambda: secrets.token_urlsafe(24))


@dataclass
class RegionStack:
    """Everything of a two-region run: `start()`, use, `stop()` (or `running(...)`)."""

    regions: tuple[str, ...]
    rtt_ms: float
    ports: Ports
    workdir: Path
    say: Callable[[str], None] = lambda _line: None
    secrets: Secrets = field(default_factory=Secrets)
    extra_api_env: dict[str, str] = field(default_factory=dict)
    # Whether the standby streams from the primary through the delay proxy (as between real
    # regions: every synchronous commit waits one RTT) or directly (the issue's model: only
    # the remote region's API is far from the primary).
    delay_replication: bool = False
    topology: Topology | None = None
    _infra: Supervisor | None = None
    _apis: dict[str, Supervisor] = field(default_factory=dict)

    @property
    def logs(self) -> Path:
        return self.workdir / "logs"

    @property
    def api(self) -> dict[str, str]:
        return {r: f"http://127.0.0.1:{p}" for r, p in self.ports.apis.items()}

    @property
    def stripe_base(self) -> str:
        return f"http://127.0.0.1:{self.ports.stripe}"

    @property
    def shopify_site(self) -> str:
        from core.shopify_gateway import API_VERSION

        return f"http://127.0.0.1:{self.ports.shopify}/admin/api/{API_VERSION}"

    def control(self, region: str) -> str:
        """The control address of the proxy in front of `region`'s database."""
        return f"http://127.0.0.1:{self.ports.controls[region]}"

    def primary_url(self) -> str:
        """The primary, as the drill itself (no region) reaches it: directly."""
        assert self.topology is not None
        return self.topology.databases[self.topology.primary].url()

    def base_env(self) -> dict[str, str]:
        s = self.secrets
        return {
            "DOTSHOP_HOME": str(self.workdir),  # never a developer's running stack
            "STRIPE_API_KEY": s.stripe_api_key,
            "STRIPE_API_BASE": self.stripe_base,
            "STRIPE_WEBHOOK_SECRET": s.stripe_webhook_secret,
            "SHOPIFY_SITE": self.shopify_site,
            "SHOPIFY_ACCESS_TOKEN": s.shopify_access_token,
            "SHOPIFY_API_SECRET": s.shopify_api_secret,
            "SHOPIFY_SHOP": SHOP,
            "DOTSHOP_ADMIN_TOKEN": s.admin_token,
        }

    # ------------------------------------------------------------------------- start

    def start(self) -> None:
        from dotshop.stack import stripe_webhook_flags

        self.logs.mkdir(parents=True, exist_ok=True, mode=0o700)
        primary, standby = self.regions
        self.say(f"PostgreSQL: primary ({primary}) and synchronous standby ({standby})")
        self.topology = start_databases(self.workdir, self.regions, self.ports)
        proxies = [proxy_child(region, self.ports, self.rtt_ms) for region in self.regions]
        sandbox = Child(
            "sandbox",
            [
                "sandbox",
                f"--stripe-port={self.ports.stripe}",
                f"--shopify-port={self.ports.shopify}",
                # Stripe's endpoint is the first region's API, as a deployment configures one.
                *stripe_webhook_flags(f"{self.api[primary]}/webhooks/stripe"),
                f"--shopify-webhook-url={self.api[primary]}/webhooks/shopify",
            ],
            {},
            f"{self.stripe_base}/_sandbox/health",
        )
        self.say(f"delay proxies ({self.rtt_ms:g} ms RTT) and the sandbox")
        self._infra = Supervisor(
            [*proxies, sandbox],
            self.logs,
            say=self.say,
            on_change=lambda _: None,
            env=self.base_env(),
        )
        self._infra.start()
        if self.delay_replication:
            self.say("the standby streams across the delay proxy")
            replica.stream_through(self.topology.databases[standby], self.ports.proxies[primary])
        self._load_catalog()
        self.start_apis()

    def _load_catalog(self) -> None:
        from core import shopify_sync
        from core.db import make_engine
        from core.shopify_gateway import ShopifyGateway

        gateway = ShopifyGateway(
            shop=SHOP, site=self.shopify_site, access_token=self.secrets.shopify_access_token
        )
        engine = make_engine(self.primary_url(), pool_size=2)
        try:
            shopify_sync.load_catalog(engine, gateway, LOCATION_ID)
        finally:
            engine.dispose()

    def api_child(self, region: str) -> Child:
        assert self.topology is not None
        return Child(
            f"api-{region}",
            ["api", f"--port={self.ports.apis[region]}", f"--workers={API_WORKERS}"],
            {**self.topology.api_env(region), **self.extra_api_env},
            f"{self.api[region]}/readyz",
        )

    def start_apis(self) -> None:
        """Start every region's API with the topology's environment, in parallel."""
        self.say(f"APIs: {', '.join(f'{r} {self.api[r]}' for r in self.regions)}")
        for region in self.regions:
            self._apis[region] = Supervisor(
                [self.api_child(region)],
                self.logs,
                say=self.say,
                on_change=lambda _: None,
                env=self.base_env(),
            )
        _in_parallel([s.start for s in self._apis.values()])

    def stop_apis(self) -> None:
        _in_parallel([s.stop for s in self._apis.values()])
        self._apis.clear()

    # ---------------------------------------------------------------------- failover

    def kill_primary(self) -> None:
        assert self.topology is not None
        self.topology.databases[self.topology.primary].kill()

    def promote_standby(self) -> None:
        """Promote the standby and flip DOTSHOP_PRIMARY_REGION to its region."""
        assert self.topology is not None
        self.topology.databases[self.topology.standby_region()].promote()
        self.topology = self.topology.failed_over()

    def repoint_apis(self) -> None:
        """Restart every region's API with the environment of the current topology."""
        self.stop_apis()
        self.start_apis()

    # -------------------------------------------------------------------------- stop

    def set_rtt(self, rtt_ms: float) -> None:
        for region in self.regions:
            httpx.post(f"{self.control(region)}/rtt/{rtt_ms:g}", timeout=5).raise_for_status()

    def proxy_stats(self, region: str) -> dict[str, float]:
        return httpx.get(f"{self.control(region)}/stats", timeout=5).json()

    def reset_proxy_stats(self) -> None:
        for region in self.regions:
            httpx.post(f"{self.control(region)}/reset", timeout=5).raise_for_status()

    def stop(self) -> None:
        self.stop_apis()
        if self._infra is not None:
            self._infra.stop()
        if self.topology is not None:
            for server in self.topology.databases.values():
                server.stop()


def proxy_child(region: str, ports: Ports, rtt_ms: float) -> Child:
    """The delay proxy in front of `region`'s database, as a supervised process."""
    return Child(
        f"proxy-{region}",
        [
            f"--listen-port={ports.proxies[region]}",
            f"--target-port={ports.databases[region]}",
            f"--control-port={ports.controls[region]}",
            f"--rtt-ms={rtt_ms:g}",
        ],
        {},
        f"http://127.0.0.1:{ports.controls[region]}/health",
        program=(sys.executable, "-m", "infra.local.delay_proxy"),
    )


def start_databases(workdir: Path, regions: tuple[str, ...], ports: Ports) -> Topology:
    """The first region's primary under workdir/<region> (kept from an earlier start, else new
    and migrated) and a standby of it under workdir/<other region>, cloned afresh, synchronous.
    Returns the topology with the first region as the primary."""
    from core.migrate import upgrade
    from infra.local.postgres import initialise

    primary_region, standby_region = regions
    pgdata = workdir / primary_region
    if (pgdata / "PG_VERSION").exists():
        primary = Server(pgdata, ports.databases[primary_region])
        primary.stop()  # a server an earlier run left behind
        primary.start()
    else:
        primary = initialise(pgdata, ports.databases[primary_region])
        primary.start()
    if not primary.execute("SELECT 1 FROM pg_database WHERE datname = 'dotshop'"):
        primary.execute("CREATE DATABASE dotshop")
    # A standby of an earlier run may lag behind, or be of another primary: clone it again.
    old_standby = Server(workdir / standby_region, ports.databases[standby_region])
    old_standby.stop()
    shutil.rmtree(old_standby.pgdata, ignore_errors=True)
    primary.execute("ALTER SYSTEM RESET synchronous_standby_names")
    primary.execute("SELECT pg_reload_conf()")
    upgrade(primary.url())
    standby = replica.start_standby(primary, old_standby.pgdata, old_standby.port)
    replica.make_synchronous(primary)
    return Topology(
        regions, primary_region, {primary_region: primary, standby_region: standby}, ports.proxies
    )


def stop_databases(workdir: Path) -> bool:
    """Stop every server under `workdir` (one folder per region); True when one ran."""
    stopped = False
    for pgdata in sorted(workdir.glob("*/PG_VERSION")):
        server = Server(pgdata.parent, 0)
        if server.running():
            server.stop()
            stopped = True
    return stopped


def _in_parallel(calls: list[Callable[[], None]]) -> None:
    """Run the calls at once (starting or stopping two APIs is mostly waiting); re-raise the
    first error."""
    errors: list[BaseException] = []

    def run(call: Callable[[], None]) -> None:
        try:
            call()
        except BaseException as exc:  # re-raised below, in the caller's thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(c,)) for c in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


@contextlib.contextmanager
def running(
    regions: tuple[str, ...] = ("us", "eu"),
    *,
    rtt_ms: float,
    say: Callable[[str], None] = lambda _line: None,
    extra_api_env: dict[str, str] | None = None,
    keep_logs: bool = False,
    delay_replication: bool = False,
) -> Iterator[RegionStack]:
    """A two-region stack on free ports in a private folder, stopped (and removed, unless it
    failed or `keep_logs`) at the end whatever happens."""
    workdir = Path(tempfile.mkdtemp(prefix="dsr"))  # short: PostgreSQL's socket path limit
    workdir.chmod(0o755)  # PostgreSQL's own user must reach its folders
    stack = RegionStack(
        regions,
        rtt_ms,
        Ports.free(regions),
        workdir,
        say=say,
        extra_api_env={
            "DOTSHOP_STRIPE_TIMEOUT": str(DRILL_STRIPE_TIMEOUT_SECONDS),
            **(extra_api_env or {}),
        },
        delay_replication=delay_replication,
    )
    ok = False
    try:
        stack.start()
        yield stack
        ok = True
    finally:
        stack.stop()
        if ok and not keep_logs:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            say(f"logs kept in {stack.logs}")
