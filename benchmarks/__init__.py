"""Benchmarks of pyriver_async against a bare-asyncpg ceiling and its peers (see README.md)."""
