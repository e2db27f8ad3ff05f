"""Helpers for testing the engine and backend plugins: tiny real-format fixtures, strategies."""
