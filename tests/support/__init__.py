"""Helpers shared by the test suites (real container engines, started and stopped by the tests)."""
