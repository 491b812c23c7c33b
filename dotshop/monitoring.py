"""Local monitoring for `dotshop up --monitoring`: a Prometheus that scrapes every part of the
stack with the repository's rules (dashboards/prometheus/*.rules.yml) and an Alertmanager that
receives both Prometheus' alerts and the checks process' business alerts (checks/alerts.py).

Both are Debian's packages (`apt-get install prometheus prometheus-alertmanager`), run as parts
of the stack by the supervisor, on loopback, with their data under the stack's folder.

One business invariant must not page twice. The checks process sends one alert per broken
subject (`DotshopInvariantViolated`, with the SKU, order or payment, the money and evidence);
the rules send one per check (`DotshopInvariant<Check>`, from the violation gauges). The
per-subject alert is the one that pages: Alertmanager inhibits a per-check alert while a
business alert of the same `check` fires. The per-check alert still pages on its own when the
business alerts do not arrive (the checks process cannot reach Alertmanager, or is down while
the API still exports the open violations): the rules are the independent path.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

from checks.alerts import ALERTNAME as BUSINESS_ALERTNAME
from dotshop.supervisor import Child, StackError

PROMETHEUS_BINARY = "prometheus"
ALERTMANAGER_BINARY = "prometheus-alertmanager"
PROMETHEUS_PORT, ALERTMANAGER_PORT = 9090, 9093
# /metrics of the parts that are not HTTP servers of their own (DOTSHOP_METRICS_PORT); the API
# serves /metrics on its own port.
METRICS_PORTS = {"relay": 9101, "sync": 9102, "checks": 9103, "console": 9104}
# Short, for a stack on one machine: a fault shows on a dashboard within seconds.
SCRAPE_INTERVAL_SECONDS = 5
RULES_DIR = Path(__file__).resolve().parents[1] / "dashboards" / "prometheus"
# The only receiver: the alerts are seen in Alertmanager's UI and API (add an integration,
# e.g. a webhook or PagerDuty, to it to be paged).
RECEIVER = "on-call"


def rule_files() -> list[Path]:
    """The repository's recording and alerting rules."""
    return sorted(RULES_DIR.glob("*.rules.yml"))


def missing_binaries() -> list[str]:
    return [b for b in (PROMETHEUS_BINARY, ALERTMANAGER_BINARY) if shutil.which(b) is None]


def require_binaries() -> None:
    """Refuse to start without Prometheus and Alertmanager, naming the Debian packages."""
    missing = missing_binaries()
    if missing:
        raise StackError(
            f"--monitoring needs Prometheus and Alertmanager; not found on PATH: "
            f"{', '.join(missing)}. Install them with "
            "`apt-get install prometheus prometheus-alertmanager` (Debian/Ubuntu)."
        )


def prometheus_config(
    targets: Mapping[str, Sequence[str]],
    *,
    alertmanager: str,
    rules: Sequence[Path],
    scrape_interval_seconds: int = SCRAPE_INTERVAL_SECONDS,
) -> dict:
    """Scrape `targets` (job -> host:port list; the API's series carry `region` themselves, so
    no target label is added), evaluate `rules`, send alerts to `alertmanager` (host:port)."""
    interval = f"{scrape_interval_seconds}s"
    return {
        "global": {
            "scrape_interval": interval,
            "scrape_timeout": interval,
            "evaluation_interval": interval,
        },
        "rule_files": [str(path) for path in rules],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]},
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": list(hosts)}]}
            for job, hosts in targets.items()
        ],
    }


def alertmanager_config() -> dict:
    """One receiver; a group per alert name and check; a per-check invariant alert inhibited
    while a business alert of the same check fires (see the module doc)."""
    return {
        "route": {
            "receiver": RECEIVER,
            "group_by": ["alertname", "check"],
            "group_wait": "10s",
            "group_interval": "1m",
            "repeat_interval": "4h",
        },
        "receivers": [{"name": RECEIVER}],
        "inhibit_rules": [
            {
                "source_matchers": [f'alertname="{BUSINESS_ALERTNAME}"'],
                "target_matchers": [
                    'alertname=~"DotshopInvariant.+"',
                    f'alertname!="{BUSINESS_ALERTNAME}"',
                ],
                "equal": ["check"],
            }
        ],
    }


def stack_targets(api_urls: Mapping[str, str]) -> dict[str, list[str]]:
    """Every part of `dotshop up`: the API per region, the other parts on METRICS_PORTS."""
    api = [url.removeprefix("http://") for url in api_urls.values()]
    return {"api": api} | {part: [f"127.0.0.1:{port}"] for part, port in METRICS_PORTS.items()}


def children(
    folder: Path,
    targets: Mapping[str, Sequence[str]],
    *,
    prometheus_port: int = PROMETHEUS_PORT,
    alertmanager_port: int = ALERTMANAGER_PORT,
    rules: Sequence[Path] | None = None,
    scrape_interval_seconds: int = SCRAPE_INTERVAL_SECONDS,
) -> list[Child]:
    """Write both configurations under `folder` (their data goes there too) and return the
    Alertmanager and Prometheus parts, in that order (Prometheus sends to Alertmanager)."""
    require_binaries()
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    alertmanager = f"127.0.0.1:{alertmanager_port}"
    prometheus = f"127.0.0.1:{prometheus_port}"
    # JSON is YAML: both read these files as YAML.
    am_file, prom_file = folder / "alertmanager.yml", folder / "prometheus.yml"
    am_file.write_text(json.dumps(alertmanager_config(), indent=2))
    prom_file.write_text(
        json.dumps(
            prometheus_config(
                targets,
                alertmanager=alertmanager,
                rules=rule_files() if rules is None else rules,
                scrape_interval_seconds=scrape_interval_seconds,
            ),
            indent=2,
        )
    )
    return [
        Child(
            "alertmanager",
            [
                f"--config.file={am_file}",
                f"--storage.path={folder / 'alertmanager-data'}",
                f"--web.listen-address={alertmanager}",
                "--cluster.listen-address=",  # a single instance: no gossip port
            ],
            {},
            f"http://{alertmanager}/-/ready",
            program=(shutil.which(ALERTMANAGER_BINARY) or ALERTMANAGER_BINARY,),
        ),
        Child(
            "prometheus",
            [
                f"--config.file={prom_file}",
                f"--storage.tsdb.path={folder / 'prometheus-data'}",
                f"--web.listen-address={prometheus}",
            ],
            {},
            f"http://{prometheus}/-/ready",
            program=(shutil.which(PROMETHEUS_BINARY) or PROMETHEUS_BINARY,),
        ),
    ]


def description(
    prometheus_port: int = PROMETHEUS_PORT, alertmanager_port: int = ALERTMANAGER_PORT
) -> dict[str, str]:
    """The `monitoring` entry of stack.json."""
    return {
        "prometheus": f"http://127.0.0.1:{prometheus_port}",
        "alertmanager": f"http://127.0.0.1:{alertmanager_port}",
    }
