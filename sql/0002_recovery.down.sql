DROP INDEX jobs_rerun_of;
DROP INDEX tasks_dispatched_waiting;
DROP FUNCTION retry_job(text, integer, text);
DROP FUNCTION reopen_idle_messages(interval);
DROP FUNCTION claim_unsent_jobs(interval, integer);
DROP FUNCTION claim_unsent_tasks(interval, integer);
DROP FUNCTION reap_task(text, interval, interval);
