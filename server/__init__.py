"""The HTTP API over published snapshots (see the serving issue; nothing here yet)."""
