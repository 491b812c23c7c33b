"""The storefront's only door: a Litestar app. Business rules live in core; this package maps
HTTP to core functions and core errors to HTTP statuses (in exactly one place: errors.py)."""
