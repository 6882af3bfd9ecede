"""Prefect tasks: thin wrappers over rtpcore that add retries, tags, artifacts and logging."""
