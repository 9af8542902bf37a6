"""HTTP routes, one module per protocol. Thin: parse, call the core, answer."""
