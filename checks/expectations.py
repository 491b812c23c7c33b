"""`data_expectations`: the schema's row invariants, re-verified by a Great Expectations suite
from outside the database (a CHECK constraint lost in a bad migration or a restore from a
database without it would otherwise go unnoticed), one finding per failed expectation.

The suite: stock counters are never negative, sellable (shopify_available - reserved -
committed) is never negative unless a shortfall is recorded, ledger legs are never zero and
their currencies are lowercase ISO codes. GX runs them as SQL against PostgreSQL: an ephemeral
context (nothing written to disk), a PostgreSQL data source per run, one validation definition
per table, one checkpoint.
"""

from __future__ import annotations

import json
import warnings
from typing import Any

from checks.registry import CheckContext, check
from core.violations import Finding

CHECK = "data_expectations"
# The constraints it re-verifies change only with migrations and restores; hourly is plenty,
# and a GX run costs a few seconds of start-up.
EXPECTATIONS_INTERVAL_SECONDS = 3600.0
# Rows named per failed expectation in the evidence (the count is always exact).
SAMPLE_ROWS = 10

SELLABLE_NEGATIVE_SQL = """
-- sellable_negative_without_shortfall --
-- Stock promised beyond Shopify's count with no shortfall recorded: the oversell check would
-- date it wrongly, and checkouts would trust a sellable count below zero.
SELECT sku, shopify_available, reserved, committed
  FROM {batch}
 WHERE shopify_available - reserved - committed < 0
   AND shortfall_since IS NULL
"""


def _suites() -> dict[str, list[Any]]:
    """Per table, its expectations (GX imported here: a few seconds, paid only when it runs)."""
    import great_expectations.expectations as gxe

    return {
        "stock": [
            gxe.ExpectColumnValuesToBeBetween(column="reserved", min_value=0),
            gxe.ExpectColumnValuesToBeBetween(column="committed", min_value=0),
            gxe.UnexpectedRowsExpectation(
                unexpected_rows_query=SELLABLE_NEGATIVE_SQL,
                description="sellable >= 0 unless a shortfall is recorded",
            ),
        ],
        "ledger_entry": [
            gxe.ExpectColumnValuesToNotBeInSet(column="amount_minor", value_set=[0]),
            gxe.ExpectColumnValuesToMatchRegex(column="currency", regex="^[a-z]{3}$"),
        ],
    }


def _validate(connection_string: str) -> list[tuple[str, Any]]:
    """Run the suites in one checkpoint; (table, expectation result) for each expectation."""
    import great_expectations as gx

    context = gx.get_context(mode="ephemeral")
    # GX's generic SQL source on our PostgreSQL URL: its `add_postgres` validates the URL as a
    # network DSN and refuses the Unix-socket URLs the embedded server uses.
    with warnings.catch_warnings():
        # It suggests the PostgreSQL source we cannot use.
        warnings.filterwarnings("ignore", message="You are using a generic SQLDatasource")
        source = context.data_sources.add_sql("dotshop", connection_string=connection_string)
    definitions = []
    for table, expectations in _suites().items():
        batch = source.add_table_asset(table, table_name=table).add_batch_definition_whole_table(
            "all rows"
        )
        suite = context.suites.add(gx.ExpectationSuite(name=table))
        for expectation in expectations:
            suite.add_expectation(expectation)
        definitions.append(
            context.validation_definitions.add(
                gx.ValidationDefinition(name=table, data=batch, suite=suite)
            )
        )
    checkpoint = context.checkpoints.add(
        gx.Checkpoint(
            name=CHECK,
            validation_definitions=definitions,
            result_format={"result_format": "SUMMARY", "partial_unexpected_count": SAMPLE_ROWS},
        )
    )
    outcome = checkpoint.run()
    return [
        (run.suite_name, result) for run in outcome.run_results.values() for result in run.results
    ]


def _subject(table: str, config: Any) -> str:
    kwargs = config.kwargs
    what = kwargs.get("column") or "rows"
    return f"{table}.{what}:{config.type}"


@check(
    CHECK,
    interval_seconds=EXPECTATIONS_INTERVAL_SECONDS,
    runbook="dashboards/runbooks/data_expectations.md",
    summary="A stored row breaks a schema invariant (negative stock counter, zero ledger leg...)",
)
def data_expectations(ctx: CheckContext) -> list[Finding]:
    url = ctx.engine.url.render_as_string(hide_password=False)
    findings = []
    for table, result in _validate(url):
        if result.success:
            continue
        if result.exception_info.get("raised_exception"):
            raise RuntimeError(f"{table}: {result.exception_info.get('exception_message')}")
        details = result.result
        evidence = {
            "table": table,
            "expectation": result.expectation_config.type,
            "kwargs": {
                k: v for k, v in result.expectation_config.kwargs.items() if k != "batch_id"
            },
            "unexpected_count": details.get("unexpected_count") or details.get("observed_value"),
            "sample": details.get("partial_unexpected_list") or details.get("details"),
        }
        # GX's values may be dates or decimals: stored as the JSON an operator reads.
        evidence = json.loads(json.dumps(evidence, default=str))
        findings.append(
            Finding(CHECK, _subject(table, result.expectation_config), evidence=evidence)
        )
    return findings
