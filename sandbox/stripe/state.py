"""In-memory objects of the sandbox Stripe account: one table per object kind, a clock that
tests can move forward, Stripe-style ids, and rendering (hidden fields, `expand[]`)."""

from __future__ import annotations

import secrets
import string
import threading
import time
from typing import Any

from sandbox.stripe.errors import ApiError

_ALPHABET = string.ascii_letters + string.digits
# Stripe ids are a prefix plus 24 base62 characters (e.g. pi_3PqL...).
ID_LENGTH = 24

# Id prefix -> (table, the noun Stripe uses in "No such ..." messages).
KINDS: dict[str, tuple[str, str]] = {
    "pi": ("payment_intents", "payment_intent"),
    "ch": ("charges", "charge"),
    "re": ("refunds", "refund"),
    "dp": ("disputes", "dispute"),
    "txn": ("balance_transactions", "balance_transaction"),
    "evt": ("events", "event"),
    "we": ("webhook_endpoints", "webhook_endpoint"),
    "pm": ("payment_methods", "payment_method"),
    "po": ("payouts", "payout"),
}
TABLES = tuple(table for table, _ in KINDS.values())


def new_id(prefix: str) -> str:
    # One read of the system's random source per id (secrets.choice made one per character,
    # a tenth of the sandbox's CPU per PaymentIntent); the modulo's bias is under 1 % a
    # character, which a stand-in's ids can afford.
    return f"{prefix}_" + "".join(
        _ALPHABET[b % len(_ALPHABET)] for b in secrets.token_bytes(ID_LENGTH)
    )


class Clock:
    """Unix seconds, plus an offset a test can advance (Stripe has test clocks for the same)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def now(self) -> int:
        return int(time.time() + self.offset)

    def advance(self, seconds: float) -> None:
        self.offset += seconds


class Store:
    """Every object by table and id. Callers hold `lock` across a read-modify-write."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.tables: dict[str, dict[str, dict[str, Any]]] = {t: {} for t in TABLES}

    def clear(self) -> None:
        with self.lock:
            for table in self.tables.values():
                table.clear()

    def add(self, table: str, obj: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            self.tables[table][obj["id"]] = obj
        return obj

    def get(self, table: str, obj_id: str, *, param: str | None = "id") -> dict[str, Any]:
        with self.lock:
            obj = self.tables[table].get(obj_id)
        if obj is None:
            noun = next(n for t, n in KINDS.values() if t == table)
            raise ApiError.not_found(noun, obj_id, param=param)
        return obj

    def find(self, obj_id: str) -> dict[str, Any] | None:
        """Any object by id, by its prefix (for expansion)."""
        prefix = obj_id.split("_", 1)[0]
        if prefix not in KINDS:
            return None
        with self.lock:
            return self.tables[KINDS[prefix][0]].get(obj_id)

    def newest_first(self, table: str) -> list[dict[str, Any]]:
        """Stripe lists newest first; insertion order breaks ties within one second."""
        with self.lock:
            items = list(self.tables[table].values())
        items.reverse()
        return sorted(items, key=lambda o: o["created"], reverse=True)

    def export(self) -> dict[str, Any]:
        with self.lock:
            data = {t: [render(o) for o in rows.values()] for t, rows in self.tables.items()}
        data["counts"] = {t: len(rows) for t, rows in data.items()}
        return data


def render(obj: dict[str, Any]) -> dict[str, Any]:
    """A deep copy without the sandbox's private fields (keys starting with `_`)."""
    return {k: _copied(v) for k, v in obj.items() if not k.startswith("_")}


def _copied(value: Any) -> Any:
    """A deep copy of JSON-shaped data (what every stored object is): its dicts and lists are
    new, its scalars are immutable and shared. About half the cost of copy.deepcopy, which keeps
    a memo and dispatches for types the store never holds; two renders per PaymentIntent."""
    if isinstance(value, dict):
        return {k: _copied(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copied(v) for v in value]
    return value


def expand(store: Store, obj: dict[str, Any], paths: list[str] | None) -> dict[str, Any]:
    """Apply `expand[]` paths (`latest_charge`, `data.charge`, `latest_charge.balance_transaction`)
    to an already rendered object, in place."""
    for path in paths or []:
        _expand_path(store, obj, path.split("."), path)
    return obj


def _expand_path(store: Store, node: Any, parts: list[str], full: str) -> None:
    if not parts:
        return
    if isinstance(node, list):
        for item in node:
            _expand_path(store, item, parts, full)
        return
    if not isinstance(node, dict) or parts[0] not in node:
        raise ApiError.invalid(
            f"This property cannot be expanded ({full}).", param="expand", code="parameter_invalid"
        )
    value = node[parts[0]]
    if isinstance(value, str):
        target = store.find(value)
        if target is None:
            raise ApiError.invalid(f"This property cannot be expanded ({full}).", param="expand")
        value = render(target)
        node[parts[0]] = value
    _expand_path(store, value, parts[1:], full)
