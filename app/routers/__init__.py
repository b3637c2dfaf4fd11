"""HTTP resources, one module per resource: parse, authorise, call one service, return."""
