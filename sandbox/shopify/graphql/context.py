"""What every resolver gets as `info.context`: the shared store and the request's circumstances."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sandbox.shopify.store import ShopStore


@dataclass
class Context:
    store: ShopStore
    version: str  # the version serving the request (after falling forward)
    base_url: str  # scheme://host:port as the client addressed us (bulk result URLs)
    bulk: Any = None  # the BulkOperations of this sandbox
    in_bulk: bool = False  # inside a bulk operation: connections return every node
    _variant_of_item: dict[int, int] | None = field(default=None, repr=False)

    def variant_of_item(self, item_id: int) -> int:
        """Inventory item id -> its variant id, built once per request (bulk reads every item)."""
        if self._variant_of_item is None:
            self._variant_of_item = {
                v["inventory_item_id"]: vid for vid, v in self.store.variants.items()
            }
        return self._variant_of_item[item_id]
