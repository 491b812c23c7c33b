"""`terraform validate` of the prod root against the real aws provider schema, where this
machine has terraform and a local provider mirror (no provider can be downloaded here). It
catches what parsing cannot: a misspelt argument, a block where an attribute belongs, a wrong
type. Elsewhere it skips; the pipeline's `static` job validates with downloaded providers.

The mirror (DOTSHOP_TF_PLUGIN_MIRROR, default /opt/tf-plugins) has hashicorp/aws only, so the
copy validated here leaves out the Grafana module and provider; everything else is as
committed."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MIRROR = Path(os.environ.get("DOTSHOP_TF_PLUGIN_MIRROR", "/opt/tf-plugins"))
AWS_PROVIDER = MIRROR / "registry.terraform.io" / "hashicorp" / "aws"

pytestmark = pytest.mark.skipif(
    shutil.which("terraform") is None or not AWS_PROVIDER.is_dir(),
    reason="needs terraform on PATH and the aws provider in a local mirror",
)


def without_block(text: str, header: str) -> str:
    """The text without the top-level block that starts with `header` (up to its `}` line)."""
    start = text.index(header)
    end = text.index("\n}\n", start) + 3
    return text[:start] + text[end:]


def test_prod_root_validates_against_the_aws_provider(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "infra" / "terraform", tmp_path / "infra" / "terraform")
    shutil.copytree(ROOT / "dashboards", tmp_path / "dashboards")
    env = tmp_path / "infra" / "terraform" / "envs" / "prod"
    main = env / "main.tf"
    main.write_text(without_block(main.read_text(), 'module "grafana" {'))
    providers = env / "providers.tf"
    providers.write_text(without_block(providers.read_text(), 'provider "grafana" {'))
    outputs = env / "outputs.tf"
    outputs.write_text(without_block(outputs.read_text(), 'output "grafana_url" {'))
    versions = env / "versions.tf"
    versions.write_text(
        re.sub(r"\n    grafana = \{.*?\n    \}", "", versions.read_text(), flags=re.S)
    )
    config = tmp_path / "terraformrc"
    config.write_text(
        f'provider_installation {{\n  filesystem_mirror {{\n    path = "{MIRROR}"\n  }}\n}}\n'
    )
    run_env = {
        **os.environ,
        "TF_CLI_CONFIG_FILE": str(config),
        "TF_DATA_DIR": str(tmp_path / "data"),
        "TF_IN_AUTOMATION": "1",
        "CHECKPOINT_DISABLE": "1",
    }
    for command in (["init", "-backend=false", "-input=false"], ["validate", "-no-color"]):
        done = subprocess.run(
            ["nice", "-n", "19", "terraform", f"-chdir={env}", *command],
            capture_output=True,
            text=True,
            timeout=300,
            env=run_env,
        )
        assert done.returncode == 0, done.stdout + done.stderr
