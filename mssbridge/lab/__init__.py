"""A loopback lab of real peers (test PKI, Postfix, Dovecot) for demos and tests."""
