"""stackha.verify."""
