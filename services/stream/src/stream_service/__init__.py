"""The stream service."""
