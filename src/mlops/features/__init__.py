"""The feature store: point-in-time training sets (offline) and the DynamoDB online store."""
