"""The data stage."""
