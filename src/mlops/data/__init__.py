"""Data: the data contract, reading and validating CSV files, ingest, the drift baseline."""
