"""Drift: the statistics, the scheduled check (drift_check), its reports."""
