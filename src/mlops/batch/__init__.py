"""Batch inference: starting a run, the run's steps, chunked reading and writing of objects."""
