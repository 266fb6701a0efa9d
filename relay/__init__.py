"""relay: verified payment-gateway callbacks in, signed ``item.purchased`` webhooks out."""

__version__ = "0.1.0"
