ALTER FUNCTION claim_tasks(text[], text) RESET enable_seqscan;
ALTER FUNCTION complete_tasks_and_check_stage(text[], integer[], text[], jsonb[], jsonb[])
    RESET enable_seqscan;
ALTER FUNCTION deferred_tasks(text[]) RESET enable_seqscan;
ALTER FUNCTION heartbeat_tasks(text[], text) RESET enable_seqscan;
ALTER FUNCTION hold_tasks_if_paused(text, text[]) RESET enable_seqscan;
ALTER FUNCTION mark_tasks_dispatched(text[]) RESET enable_seqscan;
