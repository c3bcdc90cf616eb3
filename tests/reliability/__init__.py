"""Reliability harness (issue 9): crash matrix, outages, differential fuzzing, figures."""
