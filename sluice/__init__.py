"""The `sluice` command: the local stack, the services, and operator tools (imports everything)."""
