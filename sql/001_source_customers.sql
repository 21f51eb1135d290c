-- The default source table. In production an upstream system may own it instead;
-- IF NOT EXISTS leaves such a table alone. No CHECK constraints on purpose: upstream
-- data is whatever it is, and the flow quarantines what it cannot segment.
CREATE TABLE IF NOT EXISTS public.customers (
    customer_id    bigint PRIMARY KEY,
    gender         text,
    age            integer,
    annual_income  numeric,   -- thousands of dollars a year
    spending_score integer    -- 1-100
);
