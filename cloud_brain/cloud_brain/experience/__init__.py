"""Experience flow: robots' chunks in (ingest), the store and its database, backup, export."""
