"""Load-test orchestrator."""
