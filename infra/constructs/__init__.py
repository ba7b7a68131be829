"""One construct per concern: storage (buckets, tables, topic, key), functions, pipeline."""
