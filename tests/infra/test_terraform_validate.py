"""`terraform validate` of the environment roots against the real provider schemas, where this
machine has terraform and a local provider mirror (no provider can be downloaded here). It
catches what parsing cannot: a misspelt argument, a block where an attribute belongs, a wrong
type. Elsewhere it skips; the pipeline's `static` job validates with downloaded providers.

The mirror is DOTSHOP_TF_PLUGIN_MIRROR (default /opt/tf-plugins); it holds the aws provider
only, so the dashboards root (envs/prod/dashboards, grafana provider) is validated by the
pipeline alone, and here by the parsing, formatting and checkov tests."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MIRROR = Path(os.environ.get("DOTSHOP_TF_PLUGIN_MIRROR", "/opt/tf-plugins"))

pytestmark = pytest.mark.skipif(
    shutil.which("terraform") is None or not MIRROR.is_dir(),
    reason="needs terraform on PATH and a local provider mirror",
)


def test_the_prod_root_validates_against_the_aws_provider(tmp_path: Path) -> None:
    # A copy, so that init's lock file and data stay out of the work tree.
    shutil.copytree(ROOT / "infra" / "terraform", tmp_path / "infra" / "terraform")
    shutil.copytree(ROOT / "dashboards", tmp_path / "dashboards")
    env = tmp_path / "infra" / "terraform" / "envs" / "prod"
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
