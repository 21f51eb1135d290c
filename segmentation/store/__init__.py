"""What a run keeps in the `segmentation` schema.

- run: the Run object a flow run owns; its methods are the run's transactions;
- runs: run bookkeeping (the run lock, the runs row from start to published, rejected or
  failed, the quarantine);
- partitions: the lifecycle of a run's per-customer table (create and load, attach,
  detach, drop, retention);
- history: what a run compares itself with (the previous published run, drift);
- readback: reading a run back for its report and the command line.

- scoring: a run's model compiled into the SQL function segmentation.predict.

Transactions: see segmentation.db. Nothing in runs, partitions, history, readback or scoring
begins, commits or rolls back; the one savepoint is readback's, around the sample of
customers for the picture, a read that may fail while the rest of the report stands.
"""
