"""Host functions for properties, shared data and queues, metrics, callouts and foreign functions."""
