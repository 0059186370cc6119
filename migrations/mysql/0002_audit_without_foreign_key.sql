-- On PostgreSQL and SQLite, migration 2 drops the audit's foreign key to cleanup_runs. The
-- MySQL tables were created without it: nothing to do.
DO 0;
