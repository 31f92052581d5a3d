-- The key stays the rowid: the table's contents and every query are the same either way.
SELECT 1;
