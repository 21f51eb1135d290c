"""The maths: plain functions on numpy/pandas, no database and no Prefect."""
