"""Observable features of the unified model: numeric, location, user history, and the assembled inputs."""
