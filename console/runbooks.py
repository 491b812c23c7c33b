"""The runbook of each check, as the repository keeps it (dashboards/runbooks/*.md)."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

import checks
from checks.registry import Check
from checks.runner import load_checks

REPOSITORY = Path(checks.__file__).resolve().parents[1]


@st.cache_resource(show_spinner=False)
def registry() -> dict[str, Check]:
    return load_checks()


def runbook(check_name: str) -> str:
    """The runbook's Markdown, or a note saying where it should be."""
    check = registry().get(check_name)
    if check is None:
        return f"No check named `{check_name}` is registered."
    path = REPOSITORY / check.runbook
    try:
        return path.read_text()
    except FileNotFoundError:
        return f"The runbook `{check.runbook}` is missing from this installation."
