"""The infrastructure pipeline, .github/workflows/infra.yml (issue 13): static checks (fmt,
validate, checkov), one plan per environment from its own root with its own remote state, and
an apply of that plan gated by a GitHub environment (its required reviewers approve), then the
environment's Grafana dashboards. Each root has its backend.hcl (S3 bucket + DynamoDB lock
table, a state key of its own)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hcl2
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = ROOT / ".github" / "workflows" / "infra.yml"
ENVS = ROOT / "infra" / "terraform" / "envs"
ENVIRONMENTS = sorted(p.name for p in ENVS.iterdir() if (p / "main.tf").is_file())


@pytest.fixture(scope="module")
def workflow() -> dict[str, Any]:
    return yaml.safe_load(WORKFLOW.read_text())


def runs(job: dict[str, Any]) -> str:
    return "\n".join(step.get("run", "") for step in job["steps"])


def uses(job: dict[str, Any]) -> list[str]:
    return [step["uses"].split("@")[0] for step in job["steps"] if "uses" in step]


def test_it_runs_on_changes_and_by_hand(workflow: dict[str, Any]) -> None:
    # PyYAML reads the key `on` as True (YAML 1.1).
    triggers = workflow.get("on", workflow.get(True))
    assert {"pull_request", "push", "workflow_dispatch"} <= set(triggers)
    assert "allow_data_loss" in triggers["workflow_dispatch"]["inputs"]
    assert workflow["permissions"]["id-token"] == "write", "AWS credentials come through OIDC"


def test_static_job_formats_validates_and_runs_checkov(workflow: dict[str, Any]) -> None:
    static = workflow["jobs"]["static"]
    commands = runs(static)
    assert "terraform fmt -check -recursive" in commands
    assert "init -backend=false" in commands
    assert "validate" in commands
    assert "checkov --directory infra/terraform --framework terraform" in commands
    assert "hashicorp/setup-terraform" in uses(static)


def test_every_environment_is_planned_from_its_root_with_its_state(
    workflow: dict[str, Any],
) -> None:
    plan = workflow["jobs"]["plan"]
    assert plan["needs"] == "static"
    assert sorted(plan["strategy"]["matrix"]["environment"]) == ENVIRONMENTS
    assert plan["env"]["ROOT"] == "infra/terraform/envs/${{ matrix.environment }}"
    commands = runs(plan)
    assert 'bootstrap-state.sh "$ROOT/backend.hcl"' in commands
    assert "init -backend-config=backend.hcl" in commands
    assert "plan -out=tfplan" in commands
    assert "actions/upload-artifact" in uses(plan)
    # The account and the image come from the environment's settings, never the code.
    assert plan["env"]["TF_VAR_account_id"] == "${{ vars.AWS_ACCOUNT_ID }}"


def test_apply_needs_the_plan_and_a_reviewed_environment(workflow: dict[str, Any]) -> None:
    apply = workflow["jobs"]["apply"]
    assert apply["needs"] == "plan"
    assert apply["environment"] == "${{ matrix.environment }}"
    assert sorted(apply["strategy"]["matrix"]["environment"]) == ENVIRONMENTS
    assert "refs/heads/main" in apply["if"] and "workflow_dispatch" in apply["if"]
    assert "actions/download-artifact" in uses(apply)
    commands = runs(apply)
    assert "apply -lock-timeout=5m tfplan" in commands, "apply exactly the reviewed plan"
    assert 'terraform -chdir="$ROOT" plan' not in commands, "no second plan at apply time"
    # Then Grafana's contents, from their own root, configured from the environment's outputs.
    assert "output -raw grafana_url" in commands
    assert '-chdir="$ROOT/dashboards" init -backend-config=backend.hcl' in commands
    assert commands.index("apply -lock-timeout=5m tfplan") < commands.index("$ROOT/dashboards")
    # One run at a time per environment (state lock aside, two applies must not interleave).
    assert apply["concurrency"]["group"] == workflow["jobs"]["plan"]["concurrency"]["group"]


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_each_environment_has_its_remote_state(environment: str) -> None:
    keys = []
    for root in (ENVS / environment, ENVS / environment / "dashboards"):
        backend = hcl2.load((root / "backend.hcl").open())
        assert {"bucket", "key", "region", "dynamodb_table", "encrypt"} <= set(backend)
        assert backend["encrypt"] is True
        assert environment in backend["key"]
        keys.append(backend["key"])
        versions = hcl2.load((root / "versions.tf").open())
        (terraform,) = versions["terraform"]
        assert "s3" in str(terraform["backend"]), "partial S3 backend, completed by backend.hcl"
    assert len(set(keys)) == len(keys), "each root has a state of its own"
