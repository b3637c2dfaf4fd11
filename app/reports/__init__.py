"""Program reports: figures aggregated in SQL, suppressed, rendered (JSON, CSV, HTML)."""
