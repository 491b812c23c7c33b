"""dotshop core: domain rules and persistence. Imports no web framework and none of our packages."""
