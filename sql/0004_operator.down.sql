DROP FUNCTION report_task_progress(text, integer, double precision, text);
DROP FUNCTION hold_tasks_if_paused(text, text[]);
DROP FUNCTION hold_job_if_paused(text, integer);
DROP FUNCTION resume_job_type(text, text);
DROP FUNCTION pause_job_type(text, text, text);
-- Rows still held by a pause go back to the sweeper, which sends them.
UPDATE jobs SET dispatched_at = NULL WHERE dispatched_at = pause_hold();
UPDATE tasks SET dispatched_at = NULL WHERE dispatched_at = pause_hold();
CREATE OR REPLACE FUNCTION mark_job_dispatched(p_job_id text, p_stage integer)
RETURNS boolean
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    UPDATE jobs j SET dispatched_at = now()
     WHERE j.job_id = p_job_id AND j.stage = p_stage AND j.status IN ('queued', 'processing');
    RETURN FOUND;
END $$;
DROP FUNCTION pause_hold();
DROP INDEX poison_messages_by_job;
DROP INDEX tasks_by_claimed_at;
DROP INDEX tasks_running_by_stage;
ALTER TABLE tasks
    DROP CONSTRAINT task_progress_is_fraction,
    DROP COLUMN progress_at,
    DROP COLUMN progress_attempt,
    DROP COLUMN progress_message,
    DROP COLUMN progress;
DROP TABLE job_type_pauses;
