"""`make bench`: the PostgreSQL load benchmark (see bench/README.md)."""
