"""Monitoring of served models: read the request log, detect drift, grade logged answers with a judge."""
