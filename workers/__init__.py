"""The delivery side: arq worker settings, the delivery job, backoff and SSRF-safe egress."""
