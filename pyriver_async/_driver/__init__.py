"""The only place that talks SQL. Queries live in ``*.sql`` files beside this module."""

from ._driver import JOB_COLUMNS, Driver, load_queries, quote_ident

__all__ = ["JOB_COLUMNS", "Driver", "load_queries", "quote_ident"]
