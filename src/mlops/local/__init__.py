"""The local cloud: the platform on moto, on this machine (docs/local.md)."""
