-- Who uploaded a blob. The bytes are stored once per brand (the hash is the key), but several
-- contractors may upload the same bytes; each may read back what they uploaded, and none
-- learns from the answer that a colleague uploaded it first.
CREATE TABLE blob_uploads (
  brand_id     bigint NOT NULL,
  hash         text NOT NULL,
  uploaded_by  text NOT NULL,
  created_at   timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (brand_id, hash, uploaded_by),
  FOREIGN KEY (brand_id, hash) REFERENCES blobs (brand_id, hash)
);
INSERT INTO blob_uploads (brand_id, hash, uploaded_by, created_at)
  SELECT brand_id, hash, uploaded_by, created_at FROM blobs;
