"""stackha.instanceha."""
