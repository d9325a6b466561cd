"""Health documents from chat threads: PDF transcript, CDA R2 level 1, IHE XDM (pure code)."""
