"""Directories of the MSSanté space: the signed whitelist of domains, parsed and verified."""
