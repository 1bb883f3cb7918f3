//! Secrets at rest: token signing keys, webhook secrets and audit checkpoint keys are sealed with
//! XChaCha20-Poly1305 under the operator's master key before they reach the database, and opened
//! as they are read. A sealed value is text in the same column:
//! `pxenc:v1:{key id}:{base64url(nonce ‖ ciphertext ‖ tag)}`, the key id naming the master key
//! (so a wrong key is told apart from a damaged value), the row's table and id bound in as
//! associated data (so a sealed value copied to another row does not open). Without a master key
//! values are stored as they are; a plain value still opens under a key (`secrets encrypt`
//! seals them).

use super::entities::{audit_key, signing_key, webhook_secret};
use super::{StoreError, StoreResult};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use sea_orm::{ActiveValue::Set, DatabaseConnection, EntityTrait, IntoActiveModel};

const PREFIX: &str = "pxenc:v1:";

/// The operator's master key: 32 bytes, given as 64 hex digits or base64. Never printed.
#[derive(Clone)]
pub struct MasterKey {
    key: [u8; 32],
    id: String,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MasterKey({})", self.id)
    }
}

impl MasterKey {
    /// Parses the key's text (surrounding whitespace ignored). The message never repeats it.
    pub fn parse(text: &str) -> Result<MasterKey, String> {
        let text = text.trim();
        let bytes = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            (0..32)
                .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16))
                .collect::<Result<Vec<u8>, _>>()
                .map_err(|_| "not hex".to_owned())?
        } else {
            STANDARD
                .decode(text)
                .or_else(|_| URL_SAFE_NO_PAD.decode(text))
                .map_err(|_| {
                    "a master key is 32 bytes written as 64 hex digits or in base64 \
                     (e.g. `openssl rand -hex 32`)"
                        .to_owned()
                })?
        };
        let key: [u8; 32] = bytes.try_into().map_err(|b: Vec<u8>| {
            format!(
                "a master key is 32 bytes, this one is {} (e.g. `openssl rand -hex 32`)",
                b.len()
            )
        })?;
        Ok(MasterKey::from_bytes(key))
    }

    pub fn from_bytes(key: [u8; 32]) -> MasterKey {
        // A fingerprint, not the key: 8 bytes of a keyed-hash derivation.
        let id = blake3::derive_key("parallax-mcp master key id v1", &key);
        let id = id[..8].iter().map(|b| format!("{b:02x}")).collect();
        MasterKey { key, id }
    }

    /// A fresh random key.
    pub fn generate() -> MasterKey {
        let mut key = [0u8; 32];
        rand::rng().fill_bytes(&mut key);
        MasterKey::from_bytes(key)
    }

    /// The key as 64 hex digits, for writing a new key to a file.
    pub fn to_hex(&self) -> String {
        self.key.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The key id stored with each value it seals.
    pub fn id(&self) -> &str {
        &self.id
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(&self.key.into())
    }

    fn seal(&self, aad: &str, plain: &str) -> String {
        let mut nonce = [0u8; 24];
        rand::rng().fill_bytes(&mut nonce);
        let sealed = self
            .cipher()
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: plain.as_bytes(),
                    aad: aad.as_bytes(),
                },
            )
            .expect("XChaCha20-Poly1305 encrypts any length we store");
        let mut blob = nonce.to_vec();
        blob.extend_from_slice(&sealed);
        format!("{PREFIX}{}:{}", self.id, URL_SAFE_NO_PAD.encode(blob))
    }
}

/// What the store seals with: the master key, if one is configured.
#[derive(Clone, Debug, Default)]
pub struct Sealer {
    key: Option<MasterKey>,
}

/// Whether a stored value is sealed, and under which key id.
fn sealed_id(stored: &str) -> Option<&str> {
    stored
        .strip_prefix(PREFIX)?
        .split_once(':')
        .map(|(id, _)| id)
}

impl Sealer {
    pub fn new(key: Option<MasterKey>) -> Sealer {
        Sealer { key }
    }

    pub fn key(&self) -> Option<&MasterKey> {
        self.key.as_ref()
    }

    /// The value to store for `plain` in the row `aad` names: sealed under the master key, or as
    /// it is without one.
    pub fn seal(&self, aad: &str, plain: &str) -> String {
        match &self.key {
            Some(key) => key.seal(aad, plain),
            None => plain.to_owned(),
        }
    }

    /// The secret a stored value holds. A sealed value needs the master key it names: another
    /// key (or none) is a configuration error, a value that does not open is corrupt.
    pub fn open(&self, aad: &str, stored: &str) -> StoreResult<String> {
        let Some(rest) = stored.strip_prefix(PREFIX) else {
            return Ok(stored.to_owned());
        };
        let (id, blob) = rest
            .split_once(':')
            .ok_or_else(|| StoreError::Corrupt(format!("{aad}: malformed sealed value")))?;
        let key = match &self.key {
            Some(key) if key.id == id => key,
            Some(key) => return Err(wrong_key(id, key)),
            None => return Err(no_key(id)),
        };
        let blob = URL_SAFE_NO_PAD
            .decode(blob)
            .map_err(|_| StoreError::Corrupt(format!("{aad}: malformed sealed value")))?;
        if blob.len() < 24 {
            return Err(StoreError::Corrupt(format!(
                "{aad}: sealed value too short"
            )));
        }
        let (nonce, sealed) = blob.split_at(24);
        let nonce: [u8; 24] = nonce.try_into().expect("split at 24");
        let plain = key
            .cipher()
            .decrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: sealed,
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| {
                StoreError::Corrupt(format!(
                    "{aad}: sealed value does not open under master key {id} (altered or moved)"
                ))
            })?;
        String::from_utf8(plain)
            .map_err(|_| StoreError::Corrupt(format!("{aad}: sealed value is not text")))
    }
}

fn wrong_key(stored_id: &str, key: &MasterKey) -> StoreError {
    StoreError::Misconfigured(format!(
        "wrong master key: the database's secrets are encrypted under master key {stored_id}, \
         but PARALLAX_MASTER_KEY / [secrets] master_key_file is key {}",
        key.id
    ))
}

fn no_key(stored_id: &str) -> StoreError {
    StoreError::Misconfigured(format!(
        "the database's secrets are encrypted under master key {stored_id}: set \
         PARALLAX_MASTER_KEY or [secrets] master_key_file to that key"
    ))
}

/// Associated data naming the row a secret belongs to.
pub(super) fn aad(table: &str, id: &str) -> String {
    format!("{table}/{id}")
}

/// Every stored secret: (associated data, stored value).
async fn all_secrets(db: &DatabaseConnection) -> StoreResult<Vec<(String, String)>> {
    let mut out = Vec::new();
    for m in signing_key::Entity::find().all(db).await? {
        out.push((aad("signing_keys", &m.kid), m.secret));
    }
    for m in webhook_secret::Entity::find().all(db).await? {
        out.push((aad("webhook_secrets", &m.id), m.secret));
    }
    for m in audit_key::Entity::find().all(db).await? {
        out.push((aad("audit_keys", &m.kid), m.secret));
    }
    Ok(out)
}

/// How the stored secrets stand against a master key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SecretsStatus {
    /// Secrets stored as they are.
    pub plain: usize,
    /// Secrets sealed (under the configured key: every one opened).
    pub sealed: usize,
}

/// Opens every stored secret with `sealer`: a sealed secret under another key, or under a key
/// while none is configured, is a clear error before anything runs.
pub(super) async fn check(db: &DatabaseConnection, sealer: &Sealer) -> StoreResult<SecretsStatus> {
    let mut status = SecretsStatus::default();
    for (aad, stored) in all_secrets(db).await? {
        if sealed_id(&stored).is_some() {
            sealer.open(&aad, &stored)?;
            status.sealed += 1;
        } else {
            status.plain += 1;
        }
    }
    Ok(status)
}

/// Re-seals every secret under `to` (opening each with `from`, which must hold the key that
/// sealed it) in one transaction; values already sealed under `to` stay. Returns how many values
/// were rewritten.
pub(super) async fn reseal(
    db: &DatabaseConnection,
    from: &Sealer,
    to: &MasterKey,
) -> StoreResult<usize> {
    use sea_orm::TransactionTrait;
    let to_id = to.id.clone();
    let to = Sealer::new(Some(to.clone()));
    // The new value for a stored one, or `None` when it is already sealed under `to`.
    let resealed = |aad: &str, stored: &str| -> StoreResult<Option<String>> {
        if sealed_id(stored) == Some(to_id.as_str()) {
            return Ok(None);
        }
        Ok(Some(to.seal(aad, &from.open(aad, stored)?)))
    };
    let tx = db.begin().await?;
    let mut n = 0;
    for m in signing_key::Entity::find().all(&tx).await? {
        if let Some(v) = resealed(&aad("signing_keys", &m.kid), &m.secret)? {
            let mut am = m.into_active_model();
            am.secret = Set(v);
            signing_key::Entity::update(am).exec(&tx).await?;
            n += 1;
        }
    }
    for m in webhook_secret::Entity::find().all(&tx).await? {
        if let Some(v) = resealed(&aad("webhook_secrets", &m.id), &m.secret)? {
            let mut am = m.into_active_model();
            am.secret = Set(v);
            webhook_secret::Entity::update(am).exec(&tx).await?;
            n += 1;
        }
    }
    for m in audit_key::Entity::find().all(&tx).await? {
        if let Some(v) = resealed(&aad("audit_keys", &m.kid), &m.secret)? {
            let mut am = m.into_active_model();
            am.secret = Set(v);
            audit_key::Entity::update(am).exec(&tx).await?;
            n += 1;
        }
    }
    tx.commit().await?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_under_their_key_and_row() {
        let key = MasterKey::generate();
        let sealer = Sealer::new(Some(key.clone()));
        let stored = sealer.seal("signing_keys/k1", "the secret");
        assert!(stored.starts_with("pxenc:v1:"));
        assert!(!stored.contains("the secret"));
        assert_eq!(
            sealer.open("signing_keys/k1", &stored).unwrap(),
            "the secret"
        );
        // Another row: does not open.
        assert!(matches!(
            sealer.open("signing_keys/k2", &stored),
            Err(StoreError::Corrupt(_))
        ));
        // Another key, or none: a configuration error naming the key id.
        let other = Sealer::new(Some(MasterKey::generate()));
        let e = other.open("signing_keys/k1", &stored).unwrap_err();
        assert!(
            matches!(&e, StoreError::Misconfigured(m) if m.contains(key.id())),
            "{e}"
        );
        let e = Sealer::default()
            .open("signing_keys/k1", &stored)
            .unwrap_err();
        assert!(matches!(e, StoreError::Misconfigured(_)));
        // Plain values pass through either way.
        assert_eq!(sealer.open("x/y", "plain").unwrap(), "plain");
    }

    #[test]
    fn keys_parse_from_hex_and_base64_and_never_print() {
        let key = MasterKey::generate();
        let hex = key.to_hex();
        assert_eq!(MasterKey::parse(&hex).unwrap().id(), key.id());
        let b64 = STANDARD.encode(key.key);
        assert_eq!(
            MasterKey::parse(&format!(" {b64}\n")).unwrap().id(),
            key.id()
        );
        assert!(MasterKey::parse("short").is_err());
        assert!(
            MasterKey::parse(&STANDARD.encode([0u8; 16]))
                .unwrap_err()
                .contains("16")
        );
        assert!(!format!("{key:?}").contains(&hex));
    }
}
