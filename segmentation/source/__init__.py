"""Reading a run's source table.

- catalog: the table, id column and features, checked against the catalog;
- validity: the rules of segmentation.core.rules compiled to SQL;
- queries: the COPY queries for the valid and the invalid rows;
- stream, copy_out, split_read: the valid rows from binary COPY into numpy, over one
  session or two that share the run's snapshot.
"""
