-- The full-text index takes new entries into its pending list (fastupdate) and the insert that
-- finds the list over gin_pending_list_limit merges it into the index, inside its own statement.
-- With the default 4 MB that merge made one combined append in a few thousand take 30-50 ms
-- (every message of that batch waited for it: ack p99 50-68 ms at 6,939 msgs/s). A 512 kB list
-- is merged eight times as often in an eighth of the time (slowest append 22-27 ms, ack p99
-- 33-56 ms in the same runs); the total work is about the same. Measured in bench/RESULTS.md (p9).
ALTER INDEX messages_tsv SET (gin_pending_list_limit = 512);
