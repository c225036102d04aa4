"""stackha.services."""
