-- Plans of the batched append (003). Measured under `chatd serve` at 200 msgs/s:
--  * its replay lookup (messages by chat_id, client_id) was planned as a hash join over a
--    sequential scan of `messages` (the row estimate of jsonb_array_elements is 100), so every
--    append read the whole table: PostgreSQL CPU per message grew with the table (5,541 seq
--    scans reading 15.7M rows for 5,600 messages). Without hash and merge joins the lookup is
--    a nested loop over the unique index messages_chat_client;
--  * the big statement was planned again at every call; one generic plan per session is
--    enough (its shape does not depend on the values).
-- Together: PostgreSQL from 0.71 to 0.41 core at 200 msgs/s on a fresh database.
ALTER FUNCTION chat_append_batch(jsonb) SET enable_hashjoin = off;
ALTER FUNCTION chat_append_batch(jsonb) SET enable_mergejoin = off;
ALTER FUNCTION chat_append_batch(jsonb) SET plan_cache_mode = force_generic_plan;
