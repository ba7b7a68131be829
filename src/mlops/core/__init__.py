"""The shared core: typed errors, the project configuration (mlops.toml), tasks and model families, charts."""
