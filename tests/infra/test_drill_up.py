"""`dotshop up --regions us,eu`: the parts it supervises and the environment each gets, from the
two-region topology (infra/local/regions.py), without starting them; and bad --regions is a
clear message with exit 2, before anything starts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from dotshop import stack
from infra.local.postgres import Server
from infra.local.regions import Topology


def topology(home: Path) -> Topology:
    databases = {r: Server(home / r, port) for r, port in stack.REGION_DATABASE_PORTS.items()}
    return Topology(("us", "eu"), "us", databases, stack.REGION_PROXY_PORTS)


def test_each_region_writes_to_the_primary_and_reads_its_own_database(tmp_path: Path) -> None:
    topo = topology(tmp_path)
    secrets = stack._secrets(tmp_path)
    described = stack.stack_description(
        topo.databases["us"].url(), secrets, topology=topo, rtt_ms=80
    )
    children = {c.name: c for c in stack._children(described, tmp_path, topo)}
    names = list(children)
    assert names[:2] == ["proxy-us", "proxy-eu"]  # before anything that reaches a database
    assert "--rtt-ms=80" in children["proxy-us"].args
    assert "--target-port=15432" in children["proxy-us"].args

    us_direct = topo.databases["us"].url()
    eu_direct = topo.databases["eu"].url()
    us_via_proxy = topo.databases["us"].url(port=stack.REGION_PROXY_PORTS["us"])
    us_api, eu_api = children["api-us"].env, children["api-eu"].env
    assert (us_api["DATABASE_URL"], us_api["DOTSHOP_READ_DATABASE_URL"]) == (us_direct, us_direct)
    assert (eu_api["DATABASE_URL"], eu_api["DOTSHOP_READ_DATABASE_URL"]) == (
        us_via_proxy,
        eu_direct,
    )
    assert us_api["DOTSHOP_PRIMARY_REGION"] == eu_api["DOTSHOP_PRIMARY_REGION"] == "us"
    for worker in ("relay", "sync", "checks", "console"):
        assert children[worker].env["DATABASE_URL"] == us_direct
    assert described["regions"]["database_urls"] == {"us": us_direct, "eu": eu_direct}
    assert described["regions"]["rtt_ms"] == 80


def test_after_failover_the_flip_repoints_both_regions(tmp_path: Path) -> None:
    flipped = topology(tmp_path).failed_over()
    assert flipped.primary == "eu" and flipped.lost == frozenset({"us"})
    eu_direct = flipped.databases["eu"].url()
    eu_via_proxy = flipped.databases["eu"].url(port=stack.REGION_PROXY_PORTS["eu"])
    assert flipped.api_env("eu")["DATABASE_URL"] == eu_direct
    assert flipped.api_env("us")["DATABASE_URL"] == eu_via_proxy
    assert flipped.api_env("us")["DOTSHOP_READ_DATABASE_URL"] == eu_via_proxy
    assert flipped.api_env("us")["DOTSHOP_PRIMARY_REGION"] == "eu"


def test_bad_regions_for_up_exit_2_before_anything_starts(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "dotshop", "up", "--regions", "us,us"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 2
    assert "two different regions" in done.stderr and done.stdout == ""
    assert not (tmp_path / ".dotshop").exists()
