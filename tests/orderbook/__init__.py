"""Order book tests: a naive reference book, shared command generators and invariants."""
