"""Metrics, membership-inference attacks and reports for unlearned models."""
