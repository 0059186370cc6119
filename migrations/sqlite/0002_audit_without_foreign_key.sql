-- Nothing to do on SQLite: sweep opens it with foreign keys off (its REFERENCES clause is
-- never enforced). Kept so both backends share migration numbers.
SELECT 1;
