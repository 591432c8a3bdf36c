CREATE OR REPLACE FUNCTION complete_tasks_and_check_stage(
    p_task_ids text[], p_attempts integer[], p_statuses text[], p_results jsonb[], p_errors jsonb[]
) RETURNS TABLE (task_id text, applied boolean, is_last_task boolean, task_count integer,
                 remaining integer, completed_count integer, failed_count integer)
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
#variable_conflict use_column
BEGIN
    IF cardinality(p_task_ids) IS DISTINCT FROM cardinality(p_attempts)
       OR cardinality(p_task_ids) IS DISTINCT FROM cardinality(p_statuses)
       OR cardinality(p_task_ids) IS DISTINCT FROM cardinality(p_results)
       OR cardinality(p_task_ids) IS DISTINCT FROM cardinality(p_errors) THEN
        RAISE EXCEPTION 'complete_tasks_and_check_stage: arrays differ in length (tasks %)',
            p_task_ids USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOR i IN 1 .. coalesce(cardinality(p_task_ids), 0) LOOP
        RETURN QUERY
            SELECT p_task_ids[i], f.* FROM finish_task(
                p_task_ids[i], p_attempts[i], p_statuses[i], p_results[i], p_errors[i],
                ARRAY['processing'], 'worker', NULL) f;
    END LOOP;
END $$;
