"""Face restoration service: the domain, importable without the Functions host."""
