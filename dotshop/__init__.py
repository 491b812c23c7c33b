"""The `dotshop` command and `dotshop up`: the processes that run the parts of `core`,
`checkout_api` and `sandbox`. Nothing imports this package; it imports the others."""
