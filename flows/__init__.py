"""Prefect flows: orchestration only; the work is in rtpcore, called through tasks/."""
