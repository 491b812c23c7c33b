"""Root-field resolvers, one module per area; nested fields are lazy callables in the views."""
