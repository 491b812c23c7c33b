"""Local stand-ins for Stripe and Shopify that the real `stripe` and `ShopifyAPI` SDKs talk to.

Imports nothing of ours except core.settings at most.
"""
