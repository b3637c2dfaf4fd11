"""Authentication and authorisation: the only package that imports jose or hashes secrets."""
