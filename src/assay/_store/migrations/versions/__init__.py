"""Migration revisions, oldest first (0001 = baseline schema)."""
