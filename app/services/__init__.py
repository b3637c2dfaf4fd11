"""Use cases and rules, one module per aggregate. Services raise app.errors, never HTTP."""
