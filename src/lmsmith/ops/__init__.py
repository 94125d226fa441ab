"""The ops stage."""
