//! The one error type of the core. Messages never contain key material or
//! plaintext: only lengths, version names (which are not secret) and GUC names.

/// The class of SQLSTATE an error maps to. The extension turns each class into
/// one concrete SQLSTATE in a single place (`src/error.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// 22023 invalid_parameter_value: a key or keyring setting is malformed.
    InvalidParameter,
    /// 55000 object_not_in_prerequisite_state: no key is configured.
    MissingKey,
    /// 42704 undefined_object: a key version that is not loaded.
    UnknownVersion,
    /// 22000 data_exception: GCM authentication failed.
    AuthenticationFailed,
    /// 22P03 invalid_binary_representation: truncated or malformed binary data.
    InvalidBinary,
    /// 22P02 invalid_text_representation: malformed JSON envelope or text form.
    InvalidText,
    /// 22021 character_not_in_repertoire: plaintext that is not valid text.
    InvalidCharacter,
    /// 22001 string_data_right_truncation: longer than the typmod allows.
    TooLong,
    /// 54000 program_limit_exceeded: input too large to encrypt, or a value
    /// too large for a text form.
    TooLarge,
    /// 58000 system_error: the operating system's random source failed.
    System,
    /// 0A000 feature_not_supported: DDL that would defeat the encryption.
    Unsupported,
    /// 42501 insufficient_privilege: a key setting from a source that would
    /// store it outside the session.
    InsufficientPrivilege,
    /// 55006 object_in_use: a table's triggers changed while a statement of
    /// the session is using the table.
    ObjectInUse,
    /// 42704 undefined_object (a search index that is not one); kept apart
    /// from `UnknownVersion` though PostgreSQL uses one code for both.
    UndefinedObject,
    /// 42804 datatype_mismatch: a search index over a column whose type changed.
    DatatypeMismatch,
    /// 01000 warning: reported at WARNING level, not raised.
    Warning,
    /// 53200 out_of_memory: an allocation whose size comes from input failed.
    OutOfMemory,
    /// F0000 config_file_error: the server's key-encryption keys could not
    /// be loaded (file permissions, a failing command, a malformed ring).
    ConfigFile,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("Encryption key must be 32 bytes")]
    KeySize,
    #[error("Encryption key is not valid base64")]
    KeyBase64,
    #[error("pazpaz.encryption_keys must be a JSON object mapping version names to base64 keys: {0}")]
    KeyringJson(String),
    #[error("Key version name must be 1 to 64 characters of A-Z, a-z, 0-9, '_', '-' or '.'")]
    BadVersionName,
    #[error("pazpaz.encryption_keys holds no keys")]
    EmptyKeyring,
    #[error("Both pazpaz.encryption_key and pazpaz.encryption_keys are set; set only one of them")]
    BothKeySettings,
    #[error("pazpaz.encryption_key_version must be set to choose the write key from pazpaz.encryption_keys (loaded versions: {loaded})")]
    NoCurrentVersion { loaded: String },
    #[error("No encryption key is set: set pazpaz.encryption_key (or pazpaz.encryption_keys and pazpaz.encryption_key_version) for this session")]
    MissingKey,
    #[error("Key version \"{version}\" is not loaded (loaded versions: {loaded})")]
    UnknownVersion { version: String, loaded: String },
    #[error("Decryption failed (wrong key or tampering)")]
    DecryptionFailed,
    #[error("Ciphertext too short")]
    CiphertextTooShort,
    #[error("Invalid encrypted_text envelope: {0}")]
    BadEncryptedText(&'static str),
    #[error("Invalid encrypted_text transport form: transport forms are accepted only from another Citus node, in the transaction that made them")]
    BadTransport,
    #[error("encrypted_text values are sent to other Citus nodes only in a transaction whose keys were set with set_keys(..., is_local => true)")]
    NoTransportSecret,
    #[error("Invalid encrypted field envelope: {0}")]
    BadVersioned(&'static str),
    #[error("Decrypted value is not valid UTF-8 text")]
    NotUtf8,
    #[error("Value too long for type encrypted_text({max})")]
    TooLong { max: i32 },
    #[error("Plaintext too large to encrypt")]
    TooLarge,
    #[error("encrypted_text value too large for the text envelope form ({len}-byte envelope, at most {max}): COPY … (FORMAT binary) moves it without a key")]
    TooLargeForText { len: usize, max: usize },
    #[error("The operating system's random number generator failed")]
    Rng,
    #[error("An encrypted_text constant cannot be stored in a column default, a domain default or a view: it would be encrypted once, now, under this session's key")]
    EncryptedDefault,
    #[error("An index, statistics object or generated column cannot hold decrypted values: it would store plaintext")]
    PlaintextIndex,
    #[error("encrypted_text takes one modifier: the maximum length in characters, from 1 to 10485760")]
    BadTypmod,
    /// `origin` says where the value came from (e.g. "a configuration file or
    /// ALTER SYSTEM").
    #[error("{name} cannot be set from {origin}")]
    KeySettingSource { name: String, origin: &'static str },
    /// A setting's value that is not UTF-8 (the check hook names the setting).
    #[error("not valid UTF-8")]
    SettingNotUtf8,
    /// Envelope-mode (`pazpaz.encrypted_text_io = envelope`) text input that is not UTF-8 (22021, as PostgreSQL reports
    /// an invalid byte sequence).
    #[error("Text form of an encrypted_text envelope is not valid UTF-8")]
    TextFormNotUtf8,
    #[error("{name} was set before the pazpaz_crypto library was loaded")]
    SetBeforeLoad { name: String },
    /// `pazpaz.kek_file` or `pazpaz.kek_command` set while the library is
    /// not in shared_preload_libraries.
    #[error("{name} is set, but pazpaz_crypto is not in shared_preload_libraries: no key-encryption key is loaded, and the setting is a placeholder that any role can read with SHOW")]
    KekSettingWithoutPreload { name: String },
    /// `name` is the setting: pazpaz.index_key, or pazpaz.index_key_next
    /// when an index is added under the next key.
    #[error("No index key is set: set {name} for this session")]
    MissingIndexKey { name: &'static str },
    #[error("index_key must be 'current' (pazpaz.index_key) or 'next' (pazpaz.index_key_next)")]
    IndexKeyChoice,
    /// An index built with a key (named by its fingerprint) that neither
    /// index key setting holds.
    #[error("The index key of {index} (fingerprint {fingerprint}) is not set: set pazpaz.index_key (or pazpaz.index_key_next during an index key rotation) to it")]
    IndexKeyNotSet { index: String, fingerprint: String },
    #[error("normalization must be 'none' or 'lower'")]
    UnknownNormalize,
    #[error("bits of a blind index must be between 1 and 256")]
    IndexBits,
    #[error("bits of match tokens must be between 8 and 32")]
    TokenBits,
    #[error("A substring search needs a query of at least 3 characters (after normalization)")]
    QueryTooShort,
    /// A search index whose stored definition cannot be read (changed by
    /// hand). `index` names the table (and the token column, when it is a
    /// column of that table): never a caller's string as given.
    #[error("{index} is not a search index of pazpaz_crypto, or its definition is damaged: drop it and add it again")]
    BadSearchIndex { index: String },
    /// A lookup of one kind naming a search index of the other kind
    /// (`blind_index_for` on a match index, or `blind_search_tokens_for` on
    /// a blind index).
    #[error("{index} is a {actual} index: look it up with {function}")]
    SearchIndexKind { index: String, actual: &'static str, function: &'static str },
    /// A lookup naming a column that the table does not have (the caller's
    /// string is not repeated: it may be a value passed in the wrong place).
    #[error("{table} has no search index of pazpaz_crypto on the column named")]
    NoSearchIndex { table: String },
    /// A search index trigger whose definition is not registered for its
    /// own table (`search_indexes`): it was not added by add_blind_index or
    /// add_match_index for this table (e.g. arguments copied from another
    /// table's trigger), so it is not used.
    #[error(
        "The search index {index} is not registered for this table: add it with add_blind_index or add_match_index"
    )]
    UnregisteredSearchIndex { index: String },
    /// A lookup by search index on a Citus table whose value was not known
    /// when the query was planned (a generic plan's parameter, a stable
    /// function, a SQL function's argument): Citus would send it to the
    /// workers as text.
    #[error("The value of blind_index_for or blind_search_tokens_for on a Citus table must be a constant or a bound parameter when the query is planned")]
    LookupNotPlanned,
    /// A value too large for match tokens or the `lower` normalization.
    #[error("Value too large for a match index or the 'lower' normalization (at most {max} bytes, and as many characters after normalization)")]
    SearchInputTooLarge { max: usize },
    #[error("Out of memory computing match tokens")]
    SearchOutOfMemory,
    /// The index key settings name an index key this index has not (the
    /// column has another type than the index was built for, …).
    #[error("{index} indexes a column of type {expected}, but the column is now of another type: drop the index and add it again")]
    SearchSourceType { index: String, expected: &'static str },
    /// A BEFORE row trigger that fires after a search index's (PostgreSQL
    /// fires them in name order) could change the source after its token
    /// is computed, leaving it stale.
    #[error("Trigger \"{trigger}\" fires after the trigger of the search index {index} and could change its source after the token is computed")]
    TriggerAfterSearchIndex { index: String, trigger: String },
    /// A rewrite, drop or rename of a search index's source or token column
    /// (`src/ddl_guard.rs`): the trigger would not see it.
    #[error("ALTER TABLE would rewrite, drop or rename the source or token column of the search index of trigger \"{trigger}\" without computing its tokens")]
    SearchColumnChanged { trigger: String },
    /// A trigger of a table with a search index made, changed or dropped
    /// inside a statement that is using the table (`src/ddl_guard.rs`):
    /// that statement fires the triggers it started with.
    #[error("cannot {action} on table \"{table}\" while a statement of this session is using the table: it has a search index")]
    SearchTriggersInUse { action: &'static str, table: String },
    /// A table with a search index made a partition, an inheritance child or
    /// parent (`src/ddl_guard.rs`): its trigger and index cover its own rows
    /// only.
    #[error("a table with a search index (trigger \"{trigger}\") cannot be made a partition, an inheritance child or an inheritance parent")]
    SearchIndexInTree { trigger: String },
    /// A trigger of a table being rotated or indexed whose function (or a
    /// function or operator of its WHEN clause) belongs to a role that is
    /// neither the current user nor a superuser.
    #[error("trigger \"{trigger}\" on table \"{table}\" runs a function of another role than the current user")]
    TriggerOfAnotherRole { table: String, trigger: String },
    /// A partition, inheritance child or ancestor of a table being rotated or indexed
    /// belongs to another role: the batches' UPDATEs would run its triggers
    /// and index expressions in the caller's session, which holds the keys.
    #[error("table \"{member}\", in the inheritance tree of \"{table}\" (a partition, child or ancestor of it), is owned by another role than the current user")]
    TableOfAnotherOwner { table: String, member: String },
    /// A key setting's value longer than `keyring::MAX_SETTING_BYTES` (the
    /// check hook names the setting).
    #[error("longer than {max} bytes")]
    SettingTooLong { max: usize },
    #[error("out of memory")]
    OutOfMemory,
    // ---- wrapped data keys and the server's key-encryption keys (KEKs) ----
    /// A wrapped data key, and no KEK ring in this server process.
    #[error("No key-encryption key is loaded, and wrapped data keys (pzw1:…) need one: set pazpaz.kek_file or pazpaz.kek_command, with pazpaz_crypto in shared_preload_libraries, and restart the server")]
    NoKek,
    #[error("key-encryption key \"{id}\" is not loaded (loaded key-encryption keys: {loaded})")]
    UnknownKek { id: String, loaded: String },
    /// GCM authentication of a wrapped data key failed under the KEK it names.
    #[error("Wrapped data key failed to authenticate under key-encryption key \"{kek}\" (wrong key-encryption key or tampering)")]
    WrappedKeyAuth { kek: String },
    /// The body of a wrapped key is not the base64 of 60 bytes.
    #[error("Wrapped data key is truncated or corrupt (its body must be the base64 of 60 bytes)")]
    WrappedKeyTruncated,
    #[error("Wrapped data key is malformed: {0}")]
    WrappedKeyMalformed(&'static str),
    /// A raw data key while `pazpaz.require_wrapped_keys` is on.
    #[error(
        "raw keys are refused because pazpaz.require_wrapped_keys is on: give the key in its wrapped form (pzw1:…)"
    )]
    RawKeyRefused,
    /// `wrap_encryption_key` given a key that is already wrapped.
    #[error("the key is already wrapped: use rewrap_encryption_key to move it to another key-encryption key")]
    AlreadyWrapped,
    /// Both `pazpaz.kek_file` and `pazpaz.kek_command` are set.
    #[error("pazpaz.kek_file and pazpaz.kek_command are both set; set only one of them")]
    KekBothSources,
    /// The KEK file or command could not be used (the message says why;
    /// never the file's contents or the command's output).
    #[error("{0}")]
    KekSource(String),
    /// A malformed KEK ring (the message never quotes a key).
    #[error("the key-encryption key ring must be a JSON object {{\"current\": \"<id>\", \"keys\": {{\"<id>\": \"<base64 of 32 bytes>\", …}}}}: {0}")]
    KekRing(String),
}

impl Error {
    pub fn class(&self) -> ErrorClass {
        use Error::*;
        match self {
            KeySize
            | KeyBase64
            | KeyringJson(_)
            | BadVersionName
            | EmptyKeyring
            | BothKeySettings
            | NoCurrentVersion { .. }
            | BadTypmod
            | SettingNotUtf8 => ErrorClass::InvalidParameter,
            SettingTooLong { .. } => ErrorClass::TooLarge,
            OutOfMemory => ErrorClass::OutOfMemory,
            MissingKey => ErrorClass::MissingKey,
            UnknownVersion { .. } => ErrorClass::UnknownVersion,
            DecryptionFailed | BadTransport => ErrorClass::AuthenticationFailed,
            CiphertextTooShort | BadEncryptedText(_) => ErrorClass::InvalidBinary,
            BadVersioned(_) => ErrorClass::InvalidText,
            NotUtf8 | TextFormNotUtf8 => ErrorClass::InvalidCharacter,
            TooLong { .. } => ErrorClass::TooLong,
            TooLarge | TooLargeForText { .. } => ErrorClass::TooLarge,
            Rng => ErrorClass::System,
            EncryptedDefault | PlaintextIndex | LookupNotPlanned => ErrorClass::Unsupported,
            KeySettingSource { .. } | TableOfAnotherOwner { .. } | TriggerOfAnotherRole { .. } => {
                ErrorClass::InsufficientPrivilege
            }
            SetBeforeLoad { .. } | KekSettingWithoutPreload { .. } => ErrorClass::Warning,
            MissingIndexKey { .. } | IndexKeyNotSet { .. } => ErrorClass::MissingKey,
            UnknownNormalize | IndexBits | TokenBits | QueryTooShort | IndexKeyChoice => ErrorClass::InvalidParameter,
            BadSearchIndex { .. } | NoSearchIndex { .. } | SearchIndexKind { .. } => ErrorClass::UndefinedObject,
            UnregisteredSearchIndex { .. } => ErrorClass::InsufficientPrivilege,
            SearchInputTooLarge { .. } | SearchOutOfMemory => ErrorClass::TooLarge,
            SearchSourceType { .. } => ErrorClass::DatatypeMismatch,
            TriggerAfterSearchIndex { .. } | SearchColumnChanged { .. } | SearchIndexInTree { .. } => {
                ErrorClass::Unsupported
            }
            SearchTriggersInUse { .. } => ErrorClass::ObjectInUse,
            NoKek | NoTransportSecret => ErrorClass::MissingKey,
            UnknownKek { .. } => ErrorClass::UnknownVersion,
            // A tampered or truncated wrapped key is a failed authentication,
            // the class of "Decryption failed (wrong key or tampering)".
            WrappedKeyAuth { .. } | WrappedKeyTruncated => ErrorClass::AuthenticationFailed,
            WrappedKeyMalformed(_) | AlreadyWrapped => ErrorClass::InvalidParameter,
            RawKeyRefused => ErrorClass::InsufficientPrivilege,
            KekBothSources | KekSource(_) | KekRing(_) => ErrorClass::ConfigFile,
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setting_and_typmod_errors_keep_their_classes() {
        let source = Error::KeySettingSource {
            name: "pazpaz.encryption_key".into(),
            origin: "ALTER ROLE or ALTER DATABASE settings",
        };
        assert_eq!(
            source.to_string(),
            "pazpaz.encryption_key cannot be set from ALTER ROLE or ALTER DATABASE settings"
        );
        assert_eq!(source.class(), ErrorClass::InsufficientPrivilege);
        assert_eq!(Error::SettingNotUtf8.class(), ErrorClass::InvalidParameter);
        assert_eq!(Error::BadTypmod.class(), ErrorClass::InvalidParameter);
        assert_eq!(Error::TextFormNotUtf8.class(), ErrorClass::InvalidCharacter);
        assert_eq!(Error::SetBeforeLoad { name: "pazpaz.encryption_keys".into() }.class(), ErrorClass::Warning);
    }
}
