-- The CRM shape `segmentation generate --shape crm` makes: customers with text ids, their
-- orders, and their recency, frequency and monetary value (RFM). Not a migration: it is applied
-- to a schema of the user's choice (default crm), with search_path set to that schema only
-- (segmentation/crm_shape.py). The keys come after the rows, in crm_keys.sql.

CREATE TABLE customers (
    id text NOT NULL,  -- cus_ and 14 base62 characters
    email text NOT NULL,  -- personal data
    plan text NOT NULL,  -- free, basic, pro or enterprise
    country text NOT NULL,  -- ISO 3166-1 alpha-2
    signup_date date NOT NULL,
    gender text NOT NULL,  -- F, M or U (not given)
    marketing_opt_in boolean NOT NULL
);

CREATE TABLE orders (
    order_id bigint GENERATED ALWAYS AS IDENTITY,
    customer_id text NOT NULL,
    ordered_at timestamptz NOT NULL,
    amount numeric(12,2) NOT NULL
);

-- segmentation/crm_shape.py tells the shape's own tables by these comments: it replaces them
-- when they hold no rows, and refuses any other table of the same name.
COMMENT ON TABLE customers IS 'Synthetic CRM customers, made by segmentation generate --shape crm';
COMMENT ON TABLE orders IS 'Synthetic orders of the CRM customers, made by segmentation generate --shape crm';

-- One row per customer; recency_days, first_order_at and last_order_at are NULL for a
-- customer without orders, frequency and monetary 0.
CREATE VIEW customer_rfm AS
SELECT c.id,
       floor(extract(epoch FROM now() - o.last_order_at) / 86400)::integer AS recency_days,
       coalesce(o.frequency, 0) AS frequency,
       coalesce(o.monetary, 0) AS monetary,
       o.first_order_at,
       o.last_order_at,
       c.plan,
       c.country,
       c.signup_date,
       c.gender
FROM customers c
LEFT JOIN (
    SELECT customer_id,
           count(*)::integer AS frequency,
           sum(amount) AS monetary,
           min(ordered_at) AS first_order_at,
           max(ordered_at) AS last_order_at
    FROM orders
    GROUP BY customer_id
) o ON o.customer_id = c.id;

COMMENT ON VIEW customer_rfm IS
    'Recency (whole days since the last order, as of now(); NULL without orders), frequency (orders) and monetary value (their total) of every customer';
