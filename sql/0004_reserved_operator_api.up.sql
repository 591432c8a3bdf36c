-- Reserved on the speed branch: versions 0003 (engine branch) and 0004 (operator-API branch)
-- are taken by other branches. This no-op keeps the versions contiguous here; delete it
-- when merging (repositories/migrations.py refuses two names for one version).
SELECT 1;
