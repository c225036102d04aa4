"""stackha.engine."""
