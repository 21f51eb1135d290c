#!/bin/sh
# First start only: the flow's login. It is a member of segmentation_writer, whose grants
# `segmentation db upgrade` (the db-setup service, as the database owner) applies from
# sql/roles/segmentation_roles.sql; the group role is created here so the login can join it.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
     --set=flow_password="$SEGMENTATION_DB_PASSWORD" <<'SQL'
CREATE ROLE segmentation_writer NOLOGIN;
CREATE ROLE segmentation_flow LOGIN PASSWORD :'flow_password' IN ROLE segmentation_writer;
SQL
