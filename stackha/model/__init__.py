"""stackha.model."""
