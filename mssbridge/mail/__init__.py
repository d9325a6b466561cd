"""Mail adapters: SMTP submission and IMAP reading of the MSSanté mailbox, bytes only."""
