-- Descriptions of every SQL object, for \dx+ and \df+.
COMMENT ON TYPE encrypted_text IS
  'Text encrypted with AES-256-GCM under the session''s key (pazpaz.encryption_key / pazpaz.encryption_keys); optional typmod = maximum plaintext length in characters';
COMMENT ON FUNCTION encrypt_field(text) IS
  'Encrypts text with the session''s write key: bytea nonce(12) || ciphertext || tag(16)';
COMMENT ON FUNCTION encrypt_field(text, text) IS
  'encrypt_field(plaintext, aad): as encrypt_field, binding the ciphertext to associated data (e.g. ''table.column:'' || id)';
COMMENT ON FUNCTION decrypt_field(bytea) IS
  'Decrypts a bytea made by encrypt_field with the session''s write key';
COMMENT ON FUNCTION decrypt_field(bytea, text) IS
  'decrypt_field(ciphertext, aad): decrypts a value made by encrypt_field(plaintext, aad) with the same aad';
COMMENT ON FUNCTION encrypt_field_versioned(text) IS
  'Encrypts text under the write version: jsonb {"version", "ciphertext"}';
COMMENT ON FUNCTION encrypt_field_versioned(text, text) IS
  'encrypt_field_versioned(plaintext, key_version): encrypts under the given key version';
COMMENT ON FUNCTION encrypt_field_versioned(text, text, text) IS
  'encrypt_field_versioned(plaintext, key_version, aad): encrypts under the given version with associated data';
COMMENT ON FUNCTION decrypt_field_versioned(jsonb) IS
  'Decrypts a versioned envelope with the key its "version" names';
COMMENT ON FUNCTION decrypt_field_versioned(jsonb, text) IS
  'decrypt_field_versioned(envelope, aad): decrypts an envelope made with associated data';
COMMENT ON FUNCTION reencrypt_field_versioned(jsonb) IS
  'Re-encrypts an envelope under the write version; returns it unchanged when already there';
COMMENT ON FUNCTION reencrypt_field_versioned(jsonb, text) IS
  'reencrypt_field_versioned(envelope, key_version): re-encrypts under the given version';
COMMENT ON FUNCTION reencrypt_field_versioned(jsonb, text, text) IS
  'reencrypt_field_versioned(envelope, key_version, aad): re-encrypts an envelope made with associated data';
COMMENT ON FUNCTION key_version(jsonb) IS
  'Key version of a versioned envelope; needs no key; IMMUTABLE, so it can back an index';
COMMENT ON FUNCTION key_version(encrypted_text) IS
  'Key version in an encrypted_text header; needs no key; IMMUTABLE, so it can back an index';
COMMENT ON FUNCTION reencrypt(encrypted_text) IS
  'Re-encrypts an encrypted_text value under the write version; returns it unchanged when already there';
COMMENT ON FUNCTION generate_encryption_key() IS
  'A new AES-256 key: base64 of 32 bytes from the operating system''s CSPRNG';
COMMENT ON FUNCTION encryption_status() IS
  'Loaded key versions of this session, which one writes, and an 8-hex-digit fingerprint of each (never a key)';
COMMENT ON FUNCTION encrypted_text(text, integer, boolean) IS
  'Cast text to encrypted_text(n): encrypts with the write key, enforcing the length limit';
COMMENT ON FUNCTION encrypted_text(encrypted_text, integer, boolean) IS
  'Length coercion to encrypted_text(n); decrypts only when the byte length cannot prove the value fits';
COMMENT ON FUNCTION encrypted_text(bytea) IS
  'Cast bytea to encrypted_text: the raw envelope, checked for structure; needs no key';
COMMENT ON FUNCTION text(encrypted_text) IS
  'Cast encrypted_text to text: decrypts with the session''s key for the value''s version';
COMMENT ON FUNCTION encrypted_text_in(cstring, oid, integer) IS 'encrypted_text input: encrypts (or reads the envelope text form when pazpaz.encrypted_text_io = envelope)';
COMMENT ON FUNCTION encrypted_text_out(encrypted_text) IS 'encrypted_text output: decrypts (or writes the envelope text form when pazpaz.encrypted_text_io = envelope)';
COMMENT ON FUNCTION encrypted_text_recv(internal, oid, integer) IS 'encrypted_text binary input: the envelope; needs no key';
COMMENT ON FUNCTION encrypted_text_send(encrypted_text) IS 'encrypted_text binary output: the envelope; needs no key';
COMMENT ON FUNCTION encrypted_text_typmod_in(cstring[]) IS 'encrypted_text(n) modifier input';
COMMENT ON FUNCTION encrypted_text_typmod_out(integer) IS 'encrypted_text(n) modifier output';
COMMENT ON PROCEDURE rotate_column(regclass, name, integer, text) IS
  'Re-encrypts one jsonb-envelope or encrypted_text column to the write (or given) key version in batches, committing after each; resumable';
COMMENT ON FUNCTION reencrypt(encrypted_text, text) IS
  'reencrypt(value, key_version): re-encrypts an encrypted_text value under the given key version';
COMMENT ON CAST (text AS encrypted_text) IS
  'Assignment cast: encrypts with the session''s write key';
COMMENT ON CAST (varchar AS encrypted_text) IS
  'Assignment cast: encrypts with the session''s write key';
COMMENT ON CAST (encrypted_text AS text) IS
  'Assignment cast: decrypts with the session''s key for the value''s version';
COMMENT ON CAST (encrypted_text AS varchar) IS
  'Assignment cast: decrypts with the session''s key for the value''s version';
COMMENT ON CAST (encrypted_text AS encrypted_text) IS
  'Length coercion for encrypted_text(n)';
COMMENT ON CAST (encrypted_text AS bytea) IS
  'Explicit cast: the raw envelope, no key needed';
COMMENT ON CAST (bytea AS encrypted_text) IS
  'Explicit cast: a raw envelope, checked for structure, no key needed';
