-- TEMP placeholder (drop on merge): the engine branch owns migration 0003.
SELECT 1;
