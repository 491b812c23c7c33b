"""Which API version a request is served with (shopify.dev "About Shopify API versioning").

Stable versions come out quarterly (YYYY-01/04/07/10) and are supported for 12 months; the next
quarter's version is the release candidate, and `unstable` always exists. A request for a
version that is no longer supported is served by the oldest supported one ("falls forward", and
`X-Shopify-API-Version` says so); a name that never was a version is 404.
"""

from __future__ import annotations

import re
from datetime import date

RELEASE = re.compile(r"^(\d{4})-(01|04|07|10)$")
UNSTABLE = "unstable"
SUPPORTED_STABLE_VERSIONS = 4  # 12 months of quarterly releases
# From this version on, @idempotent(key:) and changeFromQuantity are mandatory.
STRICT_INVENTORY_VERSION = "2026-04"


def _quarter(year: int, month: int, shift: int) -> str:
    index = year * 4 + (month - 1) // 3 + shift
    return f"{index // 4:04d}-{(index % 4) * 3 + 1:02d}"


def served_version(requested: str, today: date) -> str | None:
    """The version that answers `requested` today, or None (not a version: 404)."""
    if requested == UNSTABLE:
        return requested
    if not RELEASE.match(requested):
        return None
    latest = _quarter(today.year, today.month, 0)
    if requested > _quarter(today.year, today.month, 1):  # beyond the release candidate
        return None
    oldest = _quarter(today.year, today.month, 1 - SUPPORTED_STABLE_VERSIONS)
    return max(requested, oldest) if requested <= latest else requested


def strict_inventory(version: str) -> bool:
    return version == UNSTABLE or version >= STRICT_INVENTORY_VERSION
