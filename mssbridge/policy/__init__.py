"""Pure policy decisions: which events and mails the bridge relays, and which it refuses."""
