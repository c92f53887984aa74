"""Measured comparisons that print a table (DESIGN.md: speed is measured here, never asserted in tests)."""
