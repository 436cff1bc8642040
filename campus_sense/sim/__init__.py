"""Simulated devices for the demo and tests."""
