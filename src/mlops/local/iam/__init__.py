"""The local cloud's IAM: every AWS call a handler makes is authorised against its function's role (operations)."""
