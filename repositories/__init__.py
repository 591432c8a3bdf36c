"""PostgreSQL and queue access. Every row leaves this package as a schemas model."""
