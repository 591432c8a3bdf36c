-- Issue 9: procedures that name tasks by an array of ids look them up by key, also before
-- the first ANALYZE of the tasks table.
--
-- A new deployment (and the bench's scratch database) grows its tasks table for minutes
-- before autovacuum first analyzes it. Without statistics the planner sizes the table from
-- its page count and a default row width, and for tables of a few thousand finished tasks
-- it joined a batch of ids against a sequential scan of every task: each recorded batch of
-- task ends, each mark of sent messages read the whole table, and the stage transition
-- latency grew with every job run (N = 100: p50 20 -> 55 ms over four rounds of 30
-- transitions, 150 sequential scans of tasks a round; bench/PROFILE.md). A batch names at
-- most a few hundred ids, so looking each one up in tasks_pkey is right at any table size:
-- these procedures plan with sequential scans off (a cost, not a ban: a table with no
-- usable index would still be scanned).
ALTER FUNCTION claim_tasks(text[], text) SET enable_seqscan = off;
ALTER FUNCTION complete_tasks_and_check_stage(text[], integer[], text[], jsonb[], jsonb[])
    SET enable_seqscan = off;
ALTER FUNCTION deferred_tasks(text[]) SET enable_seqscan = off;
ALTER FUNCTION heartbeat_tasks(text[], text) SET enable_seqscan = off;
ALTER FUNCTION hold_tasks_if_paused(text, text[]) SET enable_seqscan = off;

-- mark_tasks_dispatched names a whole dispatch chunk (up to 25,600 ids). Looked up as
-- `task_id = ANY (array)` by index, each row that a concurrent claim had changed was
-- re-checked against the array element by element (the lock's re-check of a changed row):
-- a mark of 9,900 tasks took 7.9 s while their first messages were being claimed, holding
-- those claims (bench/PROFILE.md). Joined to the unnested array instead, a re-check is one
-- comparison. Same rows, same locks in the same order, as in 0006.
CREATE OR REPLACE FUNCTION mark_tasks_dispatched(p_task_ids text[])
RETURNS integer
LANGUAGE plpgsql SET search_path FROM CURRENT SET enable_seqscan = off AS $$
DECLARE
    v_count integer;
BEGIN
    UPDATE tasks t SET dispatched_at = now()
      FROM (SELECT u.task_id FROM unnest(p_task_ids) AS i(id) JOIN tasks u ON u.task_id = i.id
             WHERE CASE WHEN u.dispatched_at IS NULL AND u.status IN ('queued', 'retrying')
                        THEN true END
             ORDER BY u.task_id FOR NO KEY UPDATE OF u SKIP LOCKED) unsent
     WHERE t.task_id = unsent.task_id;
    GET DIAGNOSTICS v_count = ROW_COUNT;
    RETURN v_count;
END $$;
