"""The Prometheus rules and runbooks in dashboards/ (issue 12): valid for `promtool`, unit-tested
by `promtool test rules` (firing and not firing for every alert), and every alert tells on-call
what broke, how bad (`severity`), and where the runbook is; every runbook exists and names only
`dotshop` commands the real CLI has.

promtool comes from Debian's `prometheus` package (`apt-get install prometheus`); CI installs
it, so a missing promtool fails here rather than skipping the rules' only tests."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from checks.runner import load_checks

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "dashboards" / "prometheus"
RULE_FILES = [PROMETHEUS / "recording.rules.yml", PROMETHEUS / "alerts.rules.yml"]
UNIT_TESTS = sorted((PROMETHEUS / "tests").glob("*.yml"))
RUNBOOKS = ROOT / "dashboards" / "runbooks"
SEVERITIES = {"page", "ticket"}
# What every runbook an alert links to tells on-call, in this order of use.
RUNBOOK_SECTIONS = (
    "**What it means.**",
    "## Symptoms",
    "## Where to look",
    "## How to confirm",
    "## How to fix",
    "## Verify recovery",
    "## Write-up",
)


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is not installed: `apt-get install prometheus` (Debian's package)")
    return path


def run(args: list[str], cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=120)


def alerts() -> list[dict[str, Any]]:
    doc = yaml.safe_load((PROMETHEUS / "alerts.rules.yml").read_text())
    return [rule for group in doc["groups"] for rule in group["rules"] if "alert" in rule]


def alert_names() -> list[str]:
    return [rule["alert"] for rule in alerts()]


def test_rule_files_pass_promtool_check(promtool: str) -> None:
    result = run([promtool, "check", "rules", *map(str, RULE_FILES)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_pass(promtool: str) -> None:
    """Each alert's expression, labels and annotations (money formatting included) against
    series shaped like core/metrics.py's (dashboards/prometheus/tests/), one promtool per file."""
    assert UNIT_TESTS, "no promtool unit tests in dashboards/prometheus/tests/"
    with ThreadPoolExecutor(max_workers=len(UNIT_TESTS)) as pool:
        results = list(
            pool.map(lambda p: run([promtool, "test", "rules", p.name], p.parent), UNIT_TESTS)
        )
    failed = [r.stdout + r.stderr for r in results if r.returncode != 0]
    assert not failed, "\n".join(failed)


def test_every_alert_has_severity_summary_description_and_runbook() -> None:
    names = alert_names()
    assert len(names) == len(set(names)), "alert names must be unique"
    for rule in alerts():
        assert rule.get("labels", {}).get("severity") in SEVERITIES, rule["alert"]
        annotations = rule.get("annotations", {})
        for key in ("summary", "description", "runbook_url"):
            assert str(annotations.get(key, "")).strip(), f"{rule['alert']}: no {key}"


def test_every_runbook_url_is_a_file_in_the_repository() -> None:
    """Relative to the repository root, as checks/alerts.py links runbooks when
    DOTSHOP_RUNBOOK_BASE_URL is empty."""
    for rule in alerts():
        url = rule["annotations"]["runbook_url"]
        assert not urlsplit(url).scheme and not url.startswith("/"), url
        assert url.startswith("dashboards/runbooks/") and url.endswith(".md"), url
        assert (ROOT / url).is_file(), f"{rule['alert']}: {url} does not exist"


def test_every_invariant_check_has_one_alert_linking_its_runbook() -> None:
    """DESIGN.md: a violation raises a business alert naming its runbook; the per-check alerts
    link the same runbook the check registers (checks/registry.py)."""
    for check in load_checks().values():
        matching = [r for r in alerts() if f'check="{check.name}"' in r["expr"]]
        assert len(matching) == 1, f"{check.name}: {len(matching)} alerts"
        assert matching[0]["annotations"]["runbook_url"] == check.runbook


@dataclass
class Cases:
    firing: int = 0
    quiet: int = 0


def unit_test_cases() -> dict[str, Cases]:
    cases: dict[str, Cases] = {}
    for path in UNIT_TESTS:
        doc = yaml.safe_load(path.read_text())
        for test in doc["tests"]:
            for case in test.get("alert_rule_test") or []:
                counted = cases.setdefault(case["alertname"], Cases())
                if case.get("exp_alerts"):
                    counted.firing += 1
                else:
                    counted.quiet += 1
    return cases


def test_every_alert_has_a_firing_and_a_not_firing_unit_test() -> None:
    cases = unit_test_cases()
    # A misspelt alertname expecting no alert would pass vacuously in promtool.
    assert set(cases) <= set(alert_names()), set(cases) - set(alert_names())
    for name in alert_names():
        counted = cases.get(name, Cases())
        assert counted.firing >= 1, f"{name}: no firing test case"
        assert counted.quiet >= 1, f"{name}: no not-firing test case"


def linked_runbooks() -> list[Path]:
    return sorted({ROOT / r["annotations"]["runbook_url"] for r in alerts()})


def test_linked_runbooks_have_every_section() -> None:
    for path in linked_runbooks():
        text = path.read_text()
        positions = [text.find(section) for section in RUNBOOK_SECTIONS]
        missing = [s for s, at in zip(RUNBOOK_SECTIONS, positions, strict=True) if at < 0]
        assert not missing, f"{path.name}: missing {missing}"
        assert positions == sorted(positions), f"{path.name}: sections out of order"


# Fences may be indented (a code block inside a list item).
FENCED = re.compile(r"^[ \t]*```[^\n]*\n(.*?)^[ \t]*```", re.S | re.M)
INLINE = re.compile(r"`([^`]+)`")
COMMAND = re.compile(r"(?<![\w./-])dotshop[ \t]+([^\n]*)")
WORD = re.compile(r"^[a-z][a-z-]*$")


def quoted_commands(markdown: str) -> list[str]:
    """`dotshop ...` command lines in code blocks and inline code spans."""
    code = FENCED.findall(markdown) + INLINE.findall(FENCED.sub("", markdown))
    return [m.group(1).strip() for text in code for m in COMMAND.finditer(text)]


@dataclass(frozen=True)
class Help:
    ok: bool
    commands: frozenset[str]
    options: frozenset[str]


def cli_help(path: tuple[str, ...]) -> Help:
    """`python -m dotshop <path> --help`, parsed from typer's panels."""
    # Wide and UTF-8, so that names are not wrapped and the panels keep their box characters.
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "PYTHONIOENCODING": "utf-8"}
    result = subprocess.run(
        [sys.executable, "-m", "dotshop", *path, "--help"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    commands: set[str] = set()
    options: set[str] = set()
    section = ""
    for line in result.stdout.splitlines():
        if title := re.match(r"^╭─ (.+?) ─", line):
            section = title.group(1)
        elif section == "Commands" and (name := re.match(r"^│ (\S+)\s", line)):
            commands.add(name.group(1))
        elif section == "Options":
            options.update(re.findall(r"--[a-z][\w-]*", line))
    return Help(result.returncode == 0, frozenset(commands), frozenset(options))


def command_words(tokens: list[str]) -> tuple[str, ...]:
    words = []
    for token in tokens:
        if not WORD.match(token):
            break
        words.append(token)
    return tuple(words)


def test_every_dotshop_command_in_the_runbooks_exists() -> None:
    """Each subcommand and option a runbook quotes appears in the real CLI's --help."""
    quoted: list[tuple[str, list[str]]] = []
    for path in sorted(RUNBOOKS.glob("*.md")):
        for command in quoted_commands(path.read_text()):
            try:
                quoted.append((f"{path.name}: dotshop {command}", shlex.split(command)))
            except ValueError as exc:
                pytest.fail(f"{path.name}: cannot parse `dotshop {command}`: {exc}")
    assert len(quoted) >= 20, "the runbooks quote dotshop commands; the extractor finds none"

    prefixes = {()} | {
        words[:n]
        for _, tokens in quoted
        for words in [command_words(tokens)]
        for n in range(1, len(words) + 1)
    }
    with ThreadPoolExecutor(max_workers=4) as pool:
        helps = dict(zip(prefixes, pool.map(cli_help, prefixes), strict=True))
    assert helps[()].ok and {"checks", "outbox", "sync"} <= helps[()].commands, helps[()]

    for where, tokens in quoted:
        path: tuple[str, ...] = ()
        rest = tokens
        while rest and helps[path].commands and WORD.match(rest[0]):
            assert rest[0] in helps[path].commands, f"{where}: no command {rest[0]!r}"
            path, rest = (*path, rest[0]), rest[1:]
        assert helps[path].ok, where
        for token in rest:
            if token.startswith("--"):
                assert token.split("=")[0] in helps[path].options, f"{where}: no option {token}"
