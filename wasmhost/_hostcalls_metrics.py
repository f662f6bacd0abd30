"""Host functions for plugin-defined metrics."""
