-- The keys of the CRM shape (crm.sql), added once its rows are in: one index build and one
-- check of the foreign key cost far less than keeping them up row by row during the COPY.
-- Applied with search_path set to the shape's schema only (segmentation/crm_shape.py).

ALTER TABLE customers ADD PRIMARY KEY (id);
ALTER TABLE orders ADD PRIMARY KEY (order_id);
ALTER TABLE orders ADD FOREIGN KEY (customer_id) REFERENCES customers (id);
-- The foreign key's referencing side: a customer's orders, and erasing a customer, without a scan.
CREATE INDEX ON orders (customer_id);
