-- The full-text index takes new entries into its pending list (fastupdate) and the insert that
-- finds the list over gin_pending_list_limit merges it into the index, inside its own statement.
-- With the default 4 MB that merge made one combined append in a few thousand take 30-50 ms
-- (every message of that batch waited for it). A 512 kB list is merged eight times as often in
-- an eighth of the time; the total work is about the same. At 6,939 msgs/s for 20 s, the two
-- settings alternating twice: slowest append 46 and 51 ms against 27 and 22 ms, ack p99 56 and
-- 68 ms against 56 and 37 ms (bench/RESULTS.md, "Persisted path after sql/024 and sql/025").
ALTER INDEX messages_tsv SET (gin_pending_list_limit = 512);
