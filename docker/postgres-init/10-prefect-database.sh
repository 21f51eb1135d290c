#!/bin/sh
# First start only (the official postgres image runs /docker-entrypoint-initdb.d on an empty
# volume): a role and database for the Prefect server beside the customer database.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
     --set=prefect_password="$PREFECT_DB_PASSWORD" <<'SQL'
CREATE ROLE prefect LOGIN PASSWORD :'prefect_password';
CREATE DATABASE prefect OWNER prefect;
\connect prefect
-- Prefect's migrations need pg_trgm; it is a trusted extension, so the owner of the database
-- may create it, and creating it here as well means the server never depends on that.
CREATE EXTENSION IF NOT EXISTS pg_trgm;
SQL
