"""Azure Functions blueprints, one module per trigger family."""
