"""Models flow: the registry of signed versions, staged rollout, and the bus that pushes them."""
