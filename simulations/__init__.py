"""A deterministic discrete-event simulator that runs thousands of overlay cores."""
