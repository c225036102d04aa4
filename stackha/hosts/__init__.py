"""stackha.hosts."""
