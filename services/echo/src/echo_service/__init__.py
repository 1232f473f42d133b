"""The echo service."""
