//! Standard Webhooks signatures (<https://www.standardwebhooks.com>), both ways: we verify the
//! control plane's signed access requests and sign the events we send it.
//!
//! A secret is `whsec_` + base64 of 32 random bytes. The signed content is
//! `{webhook-id}.{webhook-timestamp}.{raw body}`; a signature is `v1,` + base64(HMAC-SHA256). The
//! `webhook-signature` header holds one or more signatures separated by spaces, so a sender can
//! sign with the old and the new secret while a rotation is under way.

use super::ParseError;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use rand::Rng;
use sha2::Sha256;
use std::fmt;

const PREFIX: &str = "whsec_";
const SECRET_BYTES: usize = 32;
/// How far a timestamp may be from our clock, either way.
pub const TOLERANCE_SECS: i64 = 5 * 60;
/// Bounds on what we accept in headers, so garbage is refused before any work.
const MAX_ID_LEN: usize = 256;
const MAX_SIGNATURES: usize = 8;

/// A workspace's webhook signing secret. Never printed by `Debug` or `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret(Vec<u8>);

impl WebhookSecret {
    pub fn generate() -> Self {
        let mut bytes = vec![0u8; SECRET_BYTES];
        rand::rng().fill(&mut bytes[..]);
        Self(bytes)
    }

    /// Parses `whsec_<base64>` (the prefix is optional, as in the reference libraries).
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        let b64 = raw.trim().strip_prefix(PREFIX).unwrap_or(raw.trim());
        let bytes = STANDARD
            .decode(b64)
            .map_err(|_| ParseError::new("malformed webhook secret: expected whsec_<base64>"))?;
        if bytes.len() < 16 {
            return Err(ParseError::new(
                "webhook secret too short: at least 16 bytes",
            ));
        }
        Ok(Self(bytes))
    }

    /// The secret in its shareable form, `whsec_…`: shown once, and stored.
    pub fn expose(&self) -> String {
        format!("{PREFIX}{}", STANDARD.encode(&self.0))
    }

    /// The `v1,<base64>` signature of one message.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let mac = self.mac(id, timestamp, body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }

    fn mac(&self, id: &str, timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret(..)")
    }
}

/// The `webhook-signature` header value for a message signed with every active secret.
pub fn signature_header(
    secrets: &[WebhookSecret],
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> String {
    secrets
        .iter()
        .map(|s| s.sign(id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Why a signed message was refused. Messages are safe to return to the sender.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("missing {0} header")]
    Missing(&'static str),
    #[error("malformed {0} header")]
    Malformed(&'static str),
    #[error("webhook-timestamp is outside the tolerance of {TOLERANCE_SECS} seconds")]
    Stale,
    #[error("no signature matches")]
    NoMatch,
}

/// Verifies a message against the active secrets: the id and timestamp are well-formed, the
/// timestamp is within [`TOLERANCE_SECS`] of `now`, and at least one `v1` signature matches one
/// secret (compared in constant time). Unknown signature versions are skipped, not errors.
pub fn verify(
    secrets: &[WebhookSecret],
    id: Option<&str>,
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now: i64,
) -> Result<(), SignatureError> {
    let id = id.ok_or(SignatureError::Missing("webhook-id"))?;
    let timestamp = timestamp.ok_or(SignatureError::Missing("webhook-timestamp"))?;
    let signature = signature.ok_or(SignatureError::Missing("webhook-signature"))?;
    if id.is_empty() || id.len() > MAX_ID_LEN || id.chars().any(|c| c.is_control()) {
        return Err(SignatureError::Malformed("webhook-id"));
    }
    let ts: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| SignatureError::Malformed("webhook-timestamp"))?;
    if (now - ts).abs() > TOLERANCE_SECS {
        return Err(SignatureError::Stale);
    }
    let mut candidates = Vec::new();
    for part in signature.split(' ').filter(|p| !p.is_empty()) {
        let Some((version, sig)) = part.split_once(',') else {
            return Err(SignatureError::Malformed("webhook-signature"));
        };
        if version != "v1" {
            continue;
        }
        let bytes = STANDARD
            .decode(sig)
            .map_err(|_| SignatureError::Malformed("webhook-signature"))?;
        candidates.push(bytes);
        if candidates.len() > MAX_SIGNATURES {
            return Err(SignatureError::Malformed("webhook-signature"));
        }
    }
    if candidates.is_empty() {
        return Err(SignatureError::Malformed("webhook-signature"));
    }
    let matched = secrets.iter().any(|secret| {
        candidates
            .iter()
            .any(|sig| secret.mac(id, ts, body).verify_slice(sig).is_ok())
    });
    if matched {
        Ok(())
    } else {
        Err(SignatureError::NoMatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_standard_webhooks_reference_vector() {
        // From the Standard Webhooks specification's test vectors.
        let secret = WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let sig = secret.sign(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn verifies_any_of_several_signatures_and_refuses_tampering() {
        let old = WebhookSecret::generate();
        let new = WebhookSecret::generate();
        let body = b"{}";
        let header = signature_header(&[old.clone(), new.clone()], "msg_1", 1000, body);
        let v = |secrets: &[WebhookSecret], body: &[u8], now| {
            verify(
                secrets,
                Some("msg_1"),
                Some("1000"),
                Some(&header),
                body,
                now,
            )
        };
        assert_eq!(v(std::slice::from_ref(&new), body, 1000), Ok(()));
        assert_eq!(v(std::slice::from_ref(&old), body, 1000), Ok(()));
        assert_eq!(
            v(&[WebhookSecret::generate()], body, 1000),
            Err(SignatureError::NoMatch)
        );
        assert_eq!(
            v(std::slice::from_ref(&new), b"{ }", 1000),
            Err(SignatureError::NoMatch)
        );
        assert_eq!(
            v(std::slice::from_ref(&new), body, 1000 + 301),
            Err(SignatureError::Stale)
        );
        assert_eq!(v(&[new], body, 1000 - 301), Err(SignatureError::Stale));
    }

    #[test]
    fn refuses_empty_truncated_and_malformed_headers() {
        let s = WebhookSecret::generate();
        let good = s.sign("msg_1", 1000, b"x");
        let check = |id: Option<&str>, ts: Option<&str>, sig: Option<&str>| {
            verify(std::slice::from_ref(&s), id, ts, sig, b"x", 1000)
        };
        assert_eq!(
            check(None, Some("1000"), Some(&good)),
            Err(SignatureError::Missing("webhook-id"))
        );
        assert_eq!(
            check(Some(""), Some("1000"), Some(&good)),
            Err(SignatureError::Malformed("webhook-id"))
        );
        assert_eq!(
            check(Some("msg_1"), Some("soon"), Some(&good)),
            Err(SignatureError::Malformed("webhook-timestamp"))
        );
        assert_eq!(
            check(Some("msg_1"), Some("1000"), Some("")),
            Err(SignatureError::Malformed("webhook-signature"))
        );
        assert_eq!(
            check(Some("msg_1"), Some("1000"), Some("v1,")),
            Err(SignatureError::NoMatch)
        );
        assert_eq!(
            check(Some("msg_1"), Some("1000"), Some(&good[..good.len() - 3])),
            Err(SignatureError::Malformed("webhook-signature"))
        );
        assert_eq!(
            check(Some("msg_1"), Some("1000"), Some("v1g0hM9")),
            Err(SignatureError::Malformed("webhook-signature"))
        );
        assert_eq!(
            check(Some("msg_1"), Some("1000"), Some("v2,abcd")),
            Err(SignatureError::Malformed("webhook-signature"))
        );
        assert_eq!(check(Some("msg_1"), Some("1000"), Some(&good)), Ok(()));
    }
}
