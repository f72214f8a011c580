-- Wrapped data keys: privileges and descriptions (src/key_wrapping.rs says
-- why). wrap_encryption_key (takes a raw key), rewrap_encryption_key (KEK
-- rotation) and generate_wrapped_encryption_key (each call spends one of
-- the 2^32 random-nonce encryptions a KEK allows) are operators' tools:
-- superusers, or roles an operator GRANTs EXECUTE to.
REVOKE ALL ON FUNCTION @extschema@.generate_wrapped_encryption_key() FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.generate_wrapped_encryption_key(pg_catalog.text) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.wrap_encryption_key(pg_catalog.text) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.wrap_encryption_key(pg_catalog.text, pg_catalog.text) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.rewrap_encryption_key(pg_catalog.text) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.rewrap_encryption_key(pg_catalog.text, pg_catalog.text) FROM PUBLIC;

COMMENT ON FUNCTION @extschema@.generate_wrapped_encryption_key() IS
  'A new data key from the OS CSPRNG, returned only wrapped under the server''s current key-encryption key (pzw1:…); the raw key never leaves the server; not granted to PUBLIC';
COMMENT ON FUNCTION @extschema@.generate_wrapped_encryption_key(pg_catalog.text) IS
  'generate_wrapped_encryption_key(kek_id): a new data key wrapped under the named key-encryption key; not granted to PUBLIC';
COMMENT ON FUNCTION @extschema@.wrap_encryption_key(pg_catalog.text) IS
  'Wraps an existing raw data key (base64 of 32 bytes) under the current key-encryption key; not granted to PUBLIC; pass the key as a bind parameter';
COMMENT ON FUNCTION @extschema@.wrap_encryption_key(pg_catalog.text, pg_catalog.text) IS
  'wrap_encryption_key(raw_key, kek_id): wraps under the named key-encryption key; not granted to PUBLIC';
COMMENT ON FUNCTION @extschema@.rewrap_encryption_key(pg_catalog.text) IS
  'The same data key, wrapped under the current key-encryption key (for rotating the key-encryption key); not granted to PUBLIC';
COMMENT ON FUNCTION @extschema@.rewrap_encryption_key(pg_catalog.text, pg_catalog.text) IS
  'rewrap_encryption_key(wrapped_key, kek_id): the same data key, wrapped under the named key-encryption key; not granted to PUBLIC';
COMMENT ON FUNCTION @extschema@.kek_status() IS
  'The key-encryption keys the server loaded at start-up: id, whether new wraps use it, fingerprint; never key material';
