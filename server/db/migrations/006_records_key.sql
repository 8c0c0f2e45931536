-- One index on validation_records where there were two. Every completion writes a record, and
-- each index on the table is one more insert into a B-tree whose last page every writer shares.
-- The brand's records in id order (an export, a seal) were read through (brand_id, id); the
-- primary key on id alone only ever served the sealer, which now reads each brand's range of
-- ids through this key too.
ALTER TABLE validation_records DROP CONSTRAINT validation_records_pkey;
ALTER TABLE validation_records ADD PRIMARY KEY (brand_id, id);
DROP INDEX validation_records_brand;
