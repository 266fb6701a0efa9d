"""HTTP route handlers. A handler parses (``relay.api.parsing``), checks the caller
(``relay.api.auth``) and calls one use case (``relay.ingest``, ``relay.replay``) or store; errors are
raised and turned into JSON responses by ``relay.api.middleware``."""
