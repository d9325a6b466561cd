"""Matrix adapters: the appservice endpoint and the intents that act in rooms."""
