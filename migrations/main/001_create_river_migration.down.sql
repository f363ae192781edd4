-- main 001 (down): forget every recorded version by dropping the table itself.

DROP TABLE river_migration;
