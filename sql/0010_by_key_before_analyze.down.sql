ALTER FUNCTION claim_tasks(text[], text) RESET enable_seqscan;
ALTER FUNCTION complete_tasks_and_check_stage(text[], integer[], text[], jsonb[], jsonb[])
    RESET enable_seqscan;
ALTER FUNCTION deferred_tasks(text[]) RESET enable_seqscan;
ALTER FUNCTION heartbeat_tasks(text[], text) RESET enable_seqscan;
ALTER FUNCTION hold_tasks_if_paused(text, text[]) RESET enable_seqscan;

CREATE OR REPLACE FUNCTION mark_tasks_dispatched(p_task_ids text[])
RETURNS integer
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    v_count integer;
BEGIN
    UPDATE tasks t SET dispatched_at = now()
      FROM (SELECT u.task_id FROM tasks u
             WHERE u.task_id = ANY (p_task_ids)
               AND CASE WHEN u.dispatched_at IS NULL AND u.status IN ('queued', 'retrying')
                        THEN true END
             ORDER BY u.task_id FOR NO KEY UPDATE SKIP LOCKED) unsent
     WHERE t.task_id = unsent.task_id;
    GET DIAGNOSTICS v_count = ROW_COUNT;
    RETURN v_count;
END $$;
