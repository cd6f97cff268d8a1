"""Versioned wire messages between server and agent."""
