"""HTTP route handlers. Handlers parse, verify and call one domain function; errors are raised and
turned into responses by ``relay.api.middleware``."""
