use super::ParseError;
use rand::Rng;
use std::fmt;
use std::sync::LazyLock;

const PREFIX: &str = "mcp_agent_";
const BODY_LEN: usize = 40;
const CHECK_LEN: usize = 6;
const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// An agent's API key: `mcp_agent_` + 40 base62 characters (~238 random bits) + `_` + 6-character
/// checksum. The fixed prefix lets secret scanners spot a leaked key; the checksum lets us refuse a
/// mistyped or forged key before any database lookup.
///
/// The secret never leaves through `Debug` or `Display`: only [`ApiKey::expose`] reveals it, and
/// only the code that shows a new key once calls it.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

/// The blake3 hash of a key: the only form we store.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyHash(String);

impl ApiKey {
    pub fn generate() -> Self {
        let mut rng = rand::rng();
        let body: String = (0..BODY_LEN)
            .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
            .collect();
        let check = checksum(&body);
        Self(format!("{PREFIX}{body}_{check}"))
    }

    /// Checks shape and checksum only; whether the key is known is the store's question.
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        let bad = || ParseError::new("malformed API key: expected mcp_agent_<body>_<checksum>");
        let rest = raw.strip_prefix(PREFIX).ok_or_else(bad)?;
        let (body, check) = rest.split_once('_').ok_or_else(bad)?;
        if body.len() != BODY_LEN
            || check.len() != CHECK_LEN
            || !body
                .bytes()
                .chain(check.bytes())
                .all(|b| b.is_ascii_alphanumeric())
        {
            return Err(bad());
        }
        // The checksum is public knowledge, so comparing it in variable time leaks nothing secret.
        if checksum(body) != check {
            return Err(ParseError::new("malformed API key: checksum mismatch"));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn hash(&self) -> KeyHash {
        KeyHash(blake3::hash(self.0.as_bytes()).to_hex().to_string())
    }

    /// A recognisable, non-secret prefix for listings (`mcp_agent_AbCd…`).
    pub fn display_prefix(&self) -> String {
        format!("{}…", &self.0[..PREFIX.len() + 4])
    }

    /// The secret itself. Call only to show a new key to its owner, once.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKey({})", self.display_prefix())
    }
}

impl KeyHash {
    pub fn from_stored(hex: String) -> Self {
        Self(hex)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Constant-time equality, for checking a stored hash against a presented key's (the
    /// key is hashed once, for the lookup and this check both). Both are blake3's lowercase hex,
    /// as the lookup compares them.
    pub fn matches(&self, presented: &KeyHash) -> bool {
        constant_time_eq(&self.0, &presented.0)
    }
}

/// Compares two hashes without an early exit on their contents (their lengths are public):
/// `subtle` keeps the optimiser from turning the comparison back into one that stops at the
/// first difference.
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

const CHECKSUM_CONTEXT: &str = "parallax-mcp api key checksum v1";

/// `blake3::derive_key(CHECKSUM_CONTEXT, body)`, with the context's key derived once rather than
/// for every key checked.
fn checksum_digest(body: &str) -> [u8; 32] {
    static CONTEXT: LazyLock<blake3::Hasher> =
        LazyLock::new(|| blake3::Hasher::new_derive_key(CHECKSUM_CONTEXT));
    *CONTEXT
        .clone()
        .update(body.as_bytes())
        .finalize()
        .as_bytes()
}

fn checksum(body: &str) -> String {
    let digest = checksum_digest(body);
    let mut n = u64::from_le_bytes(digest[..8].try_into().expect("8 bytes"));
    (0..CHECK_LEN)
        .map(|_| {
            let c = ALPHABET[(n % 62) as usize] as char;
            n /= 62;
            c
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_parse_and_hash() {
        let key = ApiKey::generate();
        let parsed = ApiKey::parse(key.expose()).unwrap();
        assert_eq!(parsed, key);
        assert!(key.hash().matches(&parsed.hash()));
        assert!(!key.hash().matches(&ApiKey::generate().hash()));
        assert!(!key.hash().matches(&KeyHash::from_stored("not hex".into())));
        assert!(constant_time_eq("abc", "abc"));
        assert!(!constant_time_eq("abc", "abd"));
        assert!(!constant_time_eq("abc", "abcd"));
        assert_eq!(key.hash().as_str().len(), 64);
    }

    #[test]
    fn the_checksum_is_blake3_derive_key() {
        // Keys already issued carry checksums made with `blake3::derive_key`.
        let body = "0123456789abcdefghijABCDEFGHIJ0123456789";
        assert_eq!(
            checksum_digest(body),
            blake3::derive_key(CHECKSUM_CONTEXT, body.as_bytes())
        );
    }

    #[test]
    fn tampered_keys_are_refused_before_lookup() {
        let key = ApiKey::generate();
        let raw = key.expose();
        let mut flipped = raw.as_bytes().to_vec();
        let i = PREFIX.len() + 3;
        flipped[i] = if flipped[i] == b'a' { b'b' } else { b'a' };
        let err = ApiKey::parse(std::str::from_utf8(&flipped).unwrap()).unwrap_err();
        assert!(err.0.contains("checksum"));
        assert!(ApiKey::parse("mcp_agent_short_abcdef").is_err());
        assert!(ApiKey::parse(&raw.replace("mcp_agent_", "mcp_other_")).is_err());
        assert!(ApiKey::parse("").is_err());
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let key = ApiKey::generate();
        let shown = format!("{key:?}");
        assert!(!shown.contains(&key.expose()[PREFIX.len() + 4..]));
    }
}
