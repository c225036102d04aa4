"""stackha.plan."""
