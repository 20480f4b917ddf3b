"""Readable outputs for people: the cohort dashboard and the agreement page of ``compare``."""
