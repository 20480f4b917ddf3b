"""Agreement statistics over score tables (library-backed) and the tables they read: ``cac-mhub compare``."""
