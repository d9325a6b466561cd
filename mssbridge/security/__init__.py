"""Security building blocks: TLS contexts for MSSanté peers and encryption at rest."""
