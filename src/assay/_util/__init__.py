"""Private machinery shared by the public packages (no public API here)."""
