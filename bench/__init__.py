"""Benchmarks: actormesh against raw nats-py and FastStream (`make bench`)."""
