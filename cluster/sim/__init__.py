"""The deterministic discrete-event simulator: same engines, virtual time, seeded faults."""
