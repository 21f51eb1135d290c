-- This migration used to create the demo source table public.customers. A database
-- no longer gets one from `segmentation db upgrade`: the commands that put customers into it
-- (`demo`, `generate`, `load-csv`) create it when it is missing (segmentation.loading), and a
-- configured source table is upstream's own. Databases that applied the earlier version of this
-- file keep their table (segmentation.migrations.SUPERSEDED accepts its checksum).
SELECT 1;
