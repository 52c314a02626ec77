"""The web app: OTLP/HTTP receiver (and, later, the REST API and annotation UI)."""
