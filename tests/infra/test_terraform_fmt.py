"""`terraform fmt -check` for infra/terraform, on machines without terraform (issue 13).

terraform is not in Debian and its release downloads are out of reach here, so the formatter
is HashiCorp's own hclwrite.Format, the function `terraform fmt` applies to every file,
compiled to WebAssembly in the npm package @cdktf/hcl-tools (`make infra-tools` installs it
under .dotshop/tools/hcl). On the same files it answers byte for byte what terraform 1.11 does;
the only rewrites of `terraform fmt` it lacks are two legacy-syntax fixes (an
interpolation-only string `"${var.x}"` becomes `var.x`, a quoted type `"string"` becomes
`string`), which the second test forbids. Where a terraform binary is on PATH, the third test
runs the real `terraform fmt -check` as well."""

from __future__ import annotations

import difflib
import json
import re
import shutil
import subprocess
from pathlib import Path

import hcl2
import pytest

ROOT = Path(__file__).resolve().parents[2]
TERRAFORM = ROOT / "infra" / "terraform"
HCL_TOOLS = ROOT / ".dotshop" / "tools" / "hcl" / "node_modules" / "@cdktf" / "hcl-tools"
FORMATTER = TERRAFORM / "scripts" / "hclfmt.cjs"
FILES = sorted(
    p
    for pattern in ("*.tf", "*.tfvars", "*.hcl")
    for p in TERRAFORM.rglob(pattern)
    if ".terraform" not in p.parts
)
# "${...}" alone in a string, the whole value of an argument (not part of a longer template).
INTERPOLATION_ONLY = re.compile(r'=\s*"\$\{(?:(?!\$\{).)*\}"\s*(#.*)?$')


def test_every_terraform_file_is_formatted() -> None:
    assert FILES, "no Terraform files found"
    assert HCL_TOOLS.is_dir(), "run `make infra-tools` (npm package @cdktf/hcl-tools)"
    node = shutil.which("node")
    assert node, "node is needed for the HCL formatter (`make infra-tools`)"
    done = subprocess.run(
        ["nice", "-n", "19", node, str(FORMATTER), *map(str, FILES)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    formatted = json.loads(done.stdout)
    diffs = []
    for path in FILES:
        text = path.read_text()
        if formatted[str(path)] != text:
            rel = str(path.relative_to(ROOT))
            diffs.extend(
                difflib.unified_diff(
                    text.splitlines(keepends=True),
                    formatted[str(path)].splitlines(keepends=True),
                    rel,
                    f"{rel} (formatted)",
                )
            )
    assert not diffs, "not formatted (`terraform fmt -recursive infra/terraform`):\n" + "".join(
        diffs
    )


def test_no_legacy_syntax_that_terraform_fmt_would_rewrite() -> None:
    found = []
    for path in FILES:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if INTERPOLATION_ONLY.search(line):
                found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
        if path.suffix == ".tf":
            for block in hcl2.load(path.open()).get("variable", []):
                for name, body in block.items():
                    # python-hcl2 keeps a quoted string's quotes; a type expression has none.
                    if str(body.get("type", "")).startswith('"'):
                        found.append(f"{path.relative_to(ROOT)}: variable {name}: quoted type")
    assert not found


@pytest.mark.skipif(shutil.which("terraform") is None, reason="no terraform binary on PATH")
def test_terraform_fmt_check_when_terraform_is_installed() -> None:
    done = subprocess.run(
        ["nice", "-n", "19", "terraform", "fmt", "-check", "-recursive", "-diff", str(TERRAFORM)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
