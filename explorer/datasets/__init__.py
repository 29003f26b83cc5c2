"""Readers of known materials into one table of records."""
