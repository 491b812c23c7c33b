"""Who may use the operator console, and what each role may do there.

Local accounts come from configuration (`DOTSHOP_CONSOLE_USERS`, a JSON object
`{"name": {"role": "...", "password_hash": "$argon2id$..."}}`); only argon2 hashes are stored
anywhere (`dotshop console hash-password` makes one). When the console signs people in through
OIDC instead (Streamlit's `st.login`), their role comes from `DOTSHOP_CONSOLE_OIDC_ROLES`
(`{"email": "role"}`): an identity the provider vouches for but nobody gave a role sees nothing.

Roles: `finance` reads and exports; `oncall` also retries and discards dead letters and
acknowledges violations; `admin` may do everything. Every action is authorized here, in the
function that performs it, not by hiding a button: a page that forgets to hide one still cannot
act for the wrong role.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from core.errors import Forbidden, InvalidRequest

FINANCE = "finance"
ONCALL = "oncall"
ADMIN = "admin"
ROLES = (FINANCE, ONCALL, ADMIN)

# Which roles may perform each action.
PERMISSIONS: dict[str, frozenset[str]] = {
    "read": frozenset(ROLES),
    "export": frozenset(ROLES),
    "outbox.retry": frozenset({ONCALL, ADMIN}),
    "outbox.discard": frozenset({ONCALL, ADMIN}),
    "violation.acknowledge": frozenset({ONCALL, ADMIN}),
}

_hasher = PasswordHasher()
# Verified against when the name is unknown, so a wrong name costs as long as a wrong password
# and the login form does not tell which accounts exist.
_DUMMY_HASH = _hasher.hash("dotshop-no-such-operator")


@dataclass(frozen=True)
class Operator:
    """A signed-in person: the name written to the audit log, and their role."""

    name: str
    role: str


@dataclass(frozen=True)
class Account:
    role: str
    password_hash: str


def hash_password(password: str) -> str:
    """An argon2id hash to put in DOTSHOP_CONSOLE_USERS."""
    if not password:
        raise InvalidRequest("a password is required", param="password")
    return _hasher.hash(password)


def _role(value: Any, who: str) -> str:
    if value not in ROLES:
        raise InvalidRequest(f"{who}: role must be one of {', '.join(ROLES)}", param="role")
    return str(value)


def _json_object(raw: str, what: str) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise InvalidRequest(f"{what} are not JSON: {exc.msg}") from None
    if not isinstance(data, dict):
        raise InvalidRequest(f"{what} are a JSON object")
    return data


def parse_accounts(raw: str | None) -> dict[str, Account]:
    """DOTSHOP_CONSOLE_USERS, checked: names map to a known role and an argon2 hash."""
    accounts = {}
    for name, entry in _json_object(raw, "console users").items() if raw else ():
        if not isinstance(entry, dict) or not str(entry.get("password_hash", "")).startswith(
            "$argon2"
        ):
            raise InvalidRequest(f"{name}: an account needs an argon2 password_hash")
        accounts[name] = Account(_role(entry.get("role"), name), entry["password_hash"])
    return accounts


def parse_oidc_roles(raw: str | None) -> dict[str, str]:
    """DOTSHOP_CONSOLE_OIDC_ROLES: e-mail address (case-insensitive) -> role."""
    if not raw:
        return {}
    roles = _json_object(raw, "OIDC roles")
    return {str(email).lower(): _role(role, email) for email, role in roles.items()}


def authenticate(accounts: Mapping[str, Account], name: str, password: str) -> Operator | None:
    """The operator whose name and password these are, or None (same cost either way)."""
    account = accounts.get(name)
    try:
        _hasher.verify(account.password_hash if account else _DUMMY_HASH, password)
    except (VerificationError, InvalidHashError):
        return None
    return Operator(name, account.role) if account else None


def oidc_operator(roles: Mapping[str, str], email: str | None) -> Operator | None:
    """The operator an OIDC identity is, or None when nobody gave that address a role."""
    if not email or email.lower() not in roles:
        return None
    return Operator(email, roles[email.lower()])


def may(operator: Operator, action: str) -> bool:
    return operator.role in PERMISSIONS[action]


def authorize(operator: Operator, action: str) -> None:
    """Raise Forbidden unless the operator's role allows the action."""
    if not may(operator, action):
        raise Forbidden(f"the {operator.role} role may not {action}", action=action)
