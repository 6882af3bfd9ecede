"""The support desk: files in (fetch, upload), files out (links, serve), sessions, and a laptop client of the Prefect API."""
