//! The cryptography behind `jsonwebtoken`, on `ring`.
//!
//! `jsonwebtoken` ships two back ends: `rust_crypto`, whose `rsa` crate carries an unfixed timing
//! advisory (RUSTSEC-2023-0071) and two dozen crates for algorithms this server never signs with,
//! and `aws_lc_rs`, a second C crypto library. `ring` is already in the build for TLS, so this
//! provider uses it instead:
//!
//! - HS256/384/512 sign and verify: our own member and agent access tokens ([`super::tokens`]).
//! - RS256/384/512, PS256/384/512, ES256/384 and EdDSA (Ed25519) verify only, from public keys
//!   (JWK, PEM or DER): enough to check tokens issued by someone else, such as OpenID Connect ID
//!   tokens. Signing with a private key is refused; this server only signs with HMAC.
//!
//! [`install`] must run before `jsonwebtoken` encodes or decodes anything: `jsonwebtoken` panics
//! without a provider. Every place that builds a key calls it, so no caller can forget.

use jsonwebtoken::crypto::{CryptoProvider, JwtSigner, JwtVerifier, KeyUtils};
use jsonwebtoken::errors::{Error, ErrorKind, Result};
use jsonwebtoken::jwk::ThumbprintHash;
use jsonwebtoken::signature::{self, Signer, Verifier};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, DecodingKeyKind, EncodingKey};
use ring::{digest, hmac, signature as sig};
use std::sync::Once;

/// The provider; [`install`] makes it the process default.
pub static PROVIDER: CryptoProvider = CryptoProvider {
    signer_factory: new_signer,
    verifier_factory: new_verifier,
    key_utils: KeyUtils {
        rsa_pub_components_from_private_key: |_| Err(unsupported()),
        rsa_pub_components_from_public_key: |_| Err(unsupported()),
        ec_pub_components_from_private_key: |_, _| Err(unsupported()),
        ed_pub_components_from_private_key: |_, _| Err(unsupported()),
        compute_digest,
    },
};

/// Makes [`PROVIDER`] the process-wide `jsonwebtoken` provider. Idempotent and cheap after the
/// first call.
///
/// # Panics
///
/// If another provider was installed first: tokens must never silently use other cryptography.
pub fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if let Err(other) = PROVIDER.install_default() {
            assert!(
                std::ptr::eq(other, &PROVIDER),
                "another jsonwebtoken CryptoProvider was installed before parallax-mcp's"
            );
        }
    });
}

fn unsupported() -> Error {
    ErrorKind::UnsupportedAlgorithm.into()
}

fn compute_digest(data: &[u8], hash: ThumbprintHash) -> Result<Vec<u8>> {
    let alg = match hash {
        ThumbprintHash::SHA256 => &digest::SHA256,
        ThumbprintHash::SHA384 => &digest::SHA384,
        ThumbprintHash::SHA512 => &digest::SHA512,
        _ => return Err(unsupported()),
    };
    Ok(digest::digest(alg, data).as_ref().to_vec())
}

/// What verifying needs: the algorithm's key family and ring's verification algorithm.
enum Scheme {
    Hmac(hmac::Algorithm),
    Rsa(&'static sig::RsaParameters),
    /// ECDSA and EdDSA keys are raw public points (JWK `x`/`y`, or the key inside a PEM).
    Raw(AlgorithmFamily, &'static dyn sig::VerificationAlgorithm),
}

/// `None` for an algorithm this provider does not know (the enum is non-exhaustive).
fn scheme(alg: Algorithm) -> Option<Scheme> {
    Some(match alg {
        Algorithm::HS256 => Scheme::Hmac(hmac::HMAC_SHA256),
        Algorithm::HS384 => Scheme::Hmac(hmac::HMAC_SHA384),
        Algorithm::HS512 => Scheme::Hmac(hmac::HMAC_SHA512),
        Algorithm::RS256 => Scheme::Rsa(&sig::RSA_PKCS1_2048_8192_SHA256),
        Algorithm::RS384 => Scheme::Rsa(&sig::RSA_PKCS1_2048_8192_SHA384),
        Algorithm::RS512 => Scheme::Rsa(&sig::RSA_PKCS1_2048_8192_SHA512),
        Algorithm::PS256 => Scheme::Rsa(&sig::RSA_PSS_2048_8192_SHA256),
        Algorithm::PS384 => Scheme::Rsa(&sig::RSA_PSS_2048_8192_SHA384),
        Algorithm::PS512 => Scheme::Rsa(&sig::RSA_PSS_2048_8192_SHA512),
        Algorithm::ES256 => Scheme::Raw(AlgorithmFamily::Ec, &sig::ECDSA_P256_SHA256_FIXED),
        Algorithm::ES384 => Scheme::Raw(AlgorithmFamily::Ec, &sig::ECDSA_P384_SHA384_FIXED),
        Algorithm::EdDSA => Scheme::Raw(AlgorithmFamily::Ed, &sig::ED25519),
        _ => return None,
    })
}

fn wrong_key() -> Error {
    ErrorKind::InvalidKeyFormat.into()
}

/// HMAC signer; the only kind this server signs with.
struct HmacSigner {
    alg: Algorithm,
    key: hmac::Key,
}

impl Signer<Vec<u8>> for HmacSigner {
    fn try_sign(&self, msg: &[u8]) -> std::result::Result<Vec<u8>, signature::Error> {
        Ok(hmac::sign(&self.key, msg).as_ref().to_vec())
    }
}

impl JwtSigner for HmacSigner {
    fn algorithm(&self) -> Algorithm {
        self.alg
    }
}

fn new_signer(alg: &Algorithm, key: &EncodingKey) -> Result<Box<dyn JwtSigner>> {
    let Some(Scheme::Hmac(hmac_alg)) = scheme(*alg) else {
        return Err(unsupported());
    };
    if key.family() != AlgorithmFamily::Hmac {
        return Err(wrong_key());
    }
    Ok(Box::new(HmacSigner {
        alg: *alg,
        key: hmac::Key::new(hmac_alg, key.as_bytes()),
    }))
}

enum VerifyKey {
    Hmac(hmac::Key),
    RsaDer(&'static sig::RsaParameters, Vec<u8>),
    RsaParts(&'static sig::RsaParameters, Vec<u8>, Vec<u8>),
    Raw(&'static dyn sig::VerificationAlgorithm, Vec<u8>),
}

struct RingVerifier {
    alg: Algorithm,
    key: VerifyKey,
}

impl Verifier<Vec<u8>> for RingVerifier {
    fn verify(&self, msg: &[u8], signature: &Vec<u8>) -> std::result::Result<(), signature::Error> {
        let checked = match &self.key {
            // Constant-time comparison, inside ring.
            VerifyKey::Hmac(key) => hmac::verify(key, msg, signature),
            VerifyKey::RsaDer(params, der) => {
                sig::UnparsedPublicKey::new(*params, der).verify(msg, signature)
            }
            VerifyKey::RsaParts(params, n, e) => {
                sig::RsaPublicKeyComponents { n, e }.verify(params, msg, signature)
            }
            VerifyKey::Raw(alg, public) => {
                sig::UnparsedPublicKey::new(*alg, public).verify(msg, signature)
            }
        };
        checked.map_err(|_| signature::Error::new())
    }
}

impl JwtVerifier for RingVerifier {
    fn algorithm(&self) -> Algorithm {
        self.alg
    }
}

fn new_verifier(alg: &Algorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>> {
    let scheme = scheme(*alg).ok_or_else(unsupported)?;
    let family = match &scheme {
        Scheme::Hmac(_) => AlgorithmFamily::Hmac,
        Scheme::Rsa(_) => AlgorithmFamily::Rsa,
        Scheme::Raw(family, _) => *family,
    };
    // A key only verifies the algorithms of its own family: an RSA public key is never
    // mistaken for an HMAC secret.
    if key.family() != family {
        return Err(wrong_key());
    }
    let key = match (scheme, key.kind()) {
        (Scheme::Hmac(h), DecodingKeyKind::SecretOrDer(secret)) => {
            VerifyKey::Hmac(hmac::Key::new(h, secret))
        }
        (Scheme::Rsa(p), DecodingKeyKind::SecretOrDer(der)) => VerifyKey::RsaDer(p, der.clone()),
        (Scheme::Rsa(p), DecodingKeyKind::RsaModulusExponent { n, e }) => {
            VerifyKey::RsaParts(p, n.clone(), e.clone())
        }
        (Scheme::Raw(_, v), DecodingKeyKind::SecretOrDer(public)) => {
            VerifyKey::Raw(v, public.clone())
        }
        _ => return Err(wrong_key()),
    };
    Ok(Box::new(RingVerifier { alg: *alg, key }))
}

#[cfg(test)]
mod tests {
    //! Vectors were made once with an independent implementation (Python `cryptography` and
    //! `hmac`), keys thrown away: claims `{"sub":"alice","iss":"https://idp.example",
    //! "aud":"parallax","exp":4102444800}`.

    use super::*;
    use jsonwebtoken::jwk::Jwk;
    use jsonwebtoken::{Validation, decode};
    use serde_json::{Value, json};

    const SECRET: &[u8] = b"parallax known-answer secret";

    const HS256: &str = concat!(
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCIsImtpZCI6ImsxIn0.eyJzdWIiOiJhbGljZSIsImlzcyI6Imh0dHBzOi8vaWRw",
        "LmV4YW1wbGUiLCJhdWQiOiJwYXJhbGxheCIsImV4cCI6NDEwMjQ0NDgwMH0.kEbn7e01002Huv-fqVVJH2-0QrMikmQZBOWD",
        "5ENKe6o",
    );
    const HS384: &str = concat!(
        "eyJhbGciOiJIUzM4NCIsInR5cCI6IkpXVCIsImtpZCI6ImsxIn0.eyJzdWIiOiJhbGljZSIsImlzcyI6Imh0dHBzOi8vaWRw",
        "LmV4YW1wbGUiLCJhdWQiOiJwYXJhbGxheCIsImV4cCI6NDEwMjQ0NDgwMH0.QwGhMNMC9jz_iGuuhBy_pol_tbcNJK4btiY2",
        "gBrF481EsmEYmcRRQYY-yRUmIZmD",
    );
    const HS512: &str = concat!(
        "eyJhbGciOiJIUzUxMiIsInR5cCI6IkpXVCIsImtpZCI6ImsxIn0.eyJzdWIiOiJhbGljZSIsImlzcyI6Imh0dHBzOi8vaWRw",
        "LmV4YW1wbGUiLCJhdWQiOiJwYXJhbGxheCIsImV4cCI6NDEwMjQ0NDgwMH0.eTpo55yehBzJOmQRPow5MvauvtLQa2COc5iA",
        "r6Rknp0qjsgxV63XUNHL6xK-LJSh6P9a32JBgMzhjDXVOcsvRQ",
    );
    const RS256: &str = concat!(
        "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCIsImtpZCI6InJzYTEifQ.eyJzdWIiOiJhbGljZSIsImlzcyI6Imh0dHBzOi8va",
        "WRwLmV4YW1wbGUiLCJhdWQiOiJwYXJhbGxheCIsImV4cCI6NDEwMjQ0NDgwMH0.pQz6rvW4S1kU-EmBY0XumrTv-hCSgD2Jv",
        "dX3R6lUEThPOjiBAkK0jUb9UUxIWXfytEl7gM5Drrq08dYCJjXQJEyQk1iobddKQWxYBhHW2r4-5fynqsGIl-utm7v3tTc97",
        "Oj9TP5DTYiQea7vI50wXGUrVU4EaalPC734DLwq6AN0TJBmuBn2W9hjYxemn-WFBO8foNhBR8_qeFhx2QyxAr5v4fiDRmiW9",
        "t_CIRg9zpWJGT_6sSCTCfLgq9KTFIMrsGCSP6X8PCBmj6Thcba4i5FuHCIPp5_dA6rV4CNWUJYnp4eSHoRU75PxtA14OmUal",
        "V4_SPf_T_kHCKFZ2wUz4g",
    );
    const PS256: &str = concat!(
        "eyJhbGciOiJQUzI1NiIsInR5cCI6IkpXVCIsImtpZCI6InJzYTEifQ.eyJzdWIiOiJhbGljZSIsImlzcyI6Imh0dHBzOi8va",
        "WRwLmV4YW1wbGUiLCJhdWQiOiJwYXJhbGxheCIsImV4cCI6NDEwMjQ0NDgwMH0.ku1kD1y-UYBcRL5ZVvj1Lgtj9BLHGSuwU",
        "WeLv04tMqlVtVLaI32gdy7agHPguqxYTrJN2b3vr4A41L7O2nPQtWeY-MUM7Ze0YnqgpS6zm-JcBWOmT0MwUmpaPRpk11E08",
        "T0uHKtodv7ogmVC-amY5iqawyDTg1jknHxjlVhneP46NFScVw3AywQ00BfjvtYpNn6fzu3QLHaEggh9k16NFI44vW953X5S3",
        "xG6o55KX4cVTetrJX404AgUOm7DcwrkOXTikV345pCgJp9DEcHVTuErihmof6wz2nwB-Kec_DRv0PdNr2o_o8Bb_5b8YZixQ",
        "rRJo_hzlrXkKKq4Y4JNLg",
    );
    const ES256: &str = concat!(
        "eyJhbGciOiJFUzI1NiIsInR5cCI6IkpXVCIsImtpZCI6ImVzMjU2In0.eyJzdWIiOiJhbGljZSIsImlzcyI6Imh0dHBzOi8v",
        "aWRwLmV4YW1wbGUiLCJhdWQiOiJwYXJhbGxheCIsImV4cCI6NDEwMjQ0NDgwMH0.mCuVeWjvUXI6hEOwJwxT_xjXXuXiVW3r",
        "RLysGJqKHG_fNZG5J3GMUogSBZS5O9Rb18sLeMKginUeMuZmTHImtw",
    );
    const ES384: &str = concat!(
        "eyJhbGciOiJFUzM4NCIsInR5cCI6IkpXVCIsImtpZCI6ImVzMzg0In0.eyJzdWIiOiJhbGljZSIsImlzcyI6Imh0dHBzOi8v",
        "aWRwLmV4YW1wbGUiLCJhdWQiOiJwYXJhbGxheCIsImV4cCI6NDEwMjQ0NDgwMH0.oy_e3PEnqkjEqRP-PEq9LmIDFrphcb4n",
        "9lTefLbbpr6PLKA0jMJJMs1lPJgY2WWDNoRCRw0YN34QDZgHBQGy-azPK8ceG_B70ZuMl-7-M9JYvh-dorr1nCtAHmert17H",
    );
    const EDDSA: &str = concat!(
        "eyJhbGciOiJFZERTQSIsInR5cCI6IkpXVCIsImtpZCI6ImVkMSJ9.eyJzdWIiOiJhbGljZSIsImlzcyI6Imh0dHBzOi8vaWR",
        "wLmV4YW1wbGUiLCJhdWQiOiJwYXJhbGxheCIsImV4cCI6NDEwMjQ0NDgwMH0.SlCCUodAcW8inK1dPGeaxlaVNDuXd2JFhtf",
        "u7t1kn2qF2f8M0vXklesCIIjrXxwyzU3-da2aBkExRpyIUWWMBA",
    );
    const RSA_JWK: &str = r#"{"kty":"RSA","kid":"rsa1","n":"2-RD3qqM8BkxFqisPIqOtIkZn-JSBd8TRQjyfI2CMlDq-IFlWKZbIMJA56x_50jKJHAbEXF7NAVcL213Z2SYj6sf9ynQVF6YDC8F0_6kkvNoXXNL6mTlzp1cOnkxOIYBLczr_-xpJHy6S9x54f16VTGnr9wdDLQtL1KI07kQHDdJw31QcyNlkwjpO4E5TXljoJSBpHnviYHBKDWhka3boZq9cWfIMIMUTXLuUSjEIJ2Fqh7KlO5zG1x_4tdcgiHbcEVUupWIyiYjSW-8OULGPkihgFsPC7yipeWiY-g0bbfs99kFY_9SOWlHhiN3I61L2ldQJxSSBeADyVxnnefUMw","e":"AQAB"}"#;
    const ES256_JWK: &str = r#"{"kty":"EC","kid":"es256","crv":"P-256","x":"ms4kYvWwZomGt0s0XFIe8h_xhfJcz9n9dYMhagEWn98","y":"sUBBKrNGXUqGDewZDbf6OiQ2B68A7-iTDQp74Ye8uBo"}"#;
    const ES384_JWK: &str = r#"{"kty":"EC","kid":"es384","crv":"P-384","x":"EKPqgf6VgMMHqHQ_1ZdFPKQRxPrU7gMADv11KWo_jTz_otdEPJ3SxFF7OVoNov6l","y":"XUbOG43J14vc-IMlAqu41q22l1V9ow81rzjnl0Ssu-XBc5HnO2C30gELo0zVu2rJ"}"#;
    const ED_JWK: &str = r#"{"kty":"OKP","kid":"ed1","crv":"Ed25519","x":"vowBEpIYIao481agQiQwM4If2vhWf0oVrrGHwsEb7p0"}"#;

    fn jwk(json: &str) -> DecodingKey {
        let jwk: Jwk = serde_json::from_str(json).unwrap();
        DecodingKey::from_jwk(&jwk).unwrap()
    }

    fn validation(alg: Algorithm) -> Validation {
        let mut v = Validation::new(alg);
        v.set_audience(&["parallax"]);
        v.set_issuer(&["https://idp.example"]);
        v
    }

    fn verify(token: &str, key: &DecodingKey, alg: Algorithm) -> Result<Value> {
        install();
        decode::<Value>(token, key, &validation(alg)).map(|t| t.claims)
    }

    fn kind(r: Result<Value>) -> ErrorKind {
        r.unwrap_err().into_kind()
    }

    /// The same token with another payload (`"sub":"mallory"`) and the original signature.
    fn other_payload(token: &str) -> String {
        let mut parts = token.split('.');
        let (header, _, signature) = (parts.next().unwrap(), parts.next(), parts.next().unwrap());
        format!(
            "{header}.eyJzdWIiOiJtYWxsb3J5IiwiaXNzIjoiaHR0cHM6Ly9pZHAuZXhhbXBsZSIsImF1ZCI6InBhcmFsbGF4IiwiZXhwIjo0MTAyNDQ0ODAwfQ.{signature}"
        )
    }

    /// The same token with one signature byte changed.
    fn flipped_signature(token: &str) -> String {
        let (message, signature) = token.rsplit_once('.').unwrap();
        let mut signature = signature.as_bytes().to_vec();
        // Flip a byte in the middle: the last character may only carry padding bits.
        let mid = signature.len() / 2;
        signature[mid] = if signature[mid] == b'A' { b'B' } else { b'A' };
        format!("{message}.{}", String::from_utf8(signature).unwrap())
    }

    #[test]
    fn hmac_signatures_match_an_independent_implementation() {
        install();
        for (token, alg) in [
            (HS256, Algorithm::HS256),
            (HS384, Algorithm::HS384),
            (HS512, Algorithm::HS512),
        ] {
            let (message, expected) = token.rsplit_once('.').unwrap();
            let key = EncodingKey::from_secret(SECRET);
            let signed = jsonwebtoken::crypto::sign(message.as_bytes(), &key, alg).unwrap();
            assert_eq!(signed, expected, "{alg:?}");
            let claims = verify(token, &DecodingKey::from_secret(SECRET), alg).unwrap();
            assert_eq!(claims["sub"], "alice");
        }
    }

    #[test]
    fn hmac_round_trip_through_encode_and_decode() {
        install();
        let header = jsonwebtoken::Header::new(Algorithm::HS256);
        let claims = json!({"sub": "bob", "iss": "https://idp.example", "aud": "parallax",
            "exp": 4102444800u64});
        let token =
            jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(SECRET)).unwrap();
        let back = verify(&token, &DecodingKey::from_secret(SECRET), Algorithm::HS256).unwrap();
        assert_eq!(back, claims);
        let other = DecodingKey::from_secret(b"another secret");
        assert_eq!(
            kind(verify(&token, &other, Algorithm::HS256)),
            ErrorKind::InvalidSignature
        );
    }

    #[test]
    fn public_key_tokens_verify_from_their_jwk() {
        let rsa = jwk(RSA_JWK);
        for (token, key, alg) in [
            (RS256, &rsa, Algorithm::RS256),
            (PS256, &rsa, Algorithm::PS256),
            (ES256, &jwk(ES256_JWK), Algorithm::ES256),
            (ES384, &jwk(ES384_JWK), Algorithm::ES384),
            (EDDSA, &jwk(ED_JWK), Algorithm::EdDSA),
        ] {
            let claims = verify(token, key, alg).unwrap_or_else(|e| panic!("{alg:?}: {e}"));
            assert_eq!(claims["sub"], "alice", "{alg:?}");
        }
    }

    #[test]
    fn tampered_tokens_are_refused() {
        let rsa = jwk(RSA_JWK);
        let hmac = DecodingKey::from_secret(SECRET);
        for (token, key, alg) in [
            (HS256, &hmac, Algorithm::HS256),
            (RS256, &rsa, Algorithm::RS256),
            (PS256, &rsa, Algorithm::PS256),
            (ES256, &jwk(ES256_JWK), Algorithm::ES256),
            (ES384, &jwk(ES384_JWK), Algorithm::ES384),
            (EDDSA, &jwk(ED_JWK), Algorithm::EdDSA),
        ] {
            for bad in [other_payload(token), flipped_signature(token)] {
                assert_eq!(
                    kind(verify(&bad, key, alg)),
                    ErrorKind::InvalidSignature,
                    "{alg:?}"
                );
            }
        }
        // A valid signature, but by another key (the ES256 token against the Ed25519 key's
        // family is a format error; against another P-256 key it is a bad signature).
        let p256_other = jwk(ES256_JWK.replace("ms4k", "ms4l").as_str());
        assert!(verify(ES256, &p256_other, Algorithm::ES256).is_err());
    }

    #[test]
    fn a_token_cannot_choose_another_algorithm() {
        let rsa = jwk(RSA_JWK);
        // The header says RS256; only PS256 is accepted.
        assert_eq!(
            kind(verify(RS256, &rsa, Algorithm::PS256)),
            ErrorKind::InvalidAlgorithm
        );
        // RS256 signature bytes relabelled as PS256 do not verify as PSS.
        let (rs_header, rs_rest) = RS256.split_once('.').unwrap();
        let (ps_header, _) = PS256.split_once('.').unwrap();
        assert_ne!(rs_header, ps_header);
        let relabelled = format!("{ps_header}.{rs_rest}");
        assert_eq!(
            kind(verify(&relabelled, &rsa, Algorithm::PS256)),
            ErrorKind::InvalidSignature
        );
        // The classic confusion: an HMAC token is never checked with an RSA public key.
        assert_eq!(
            kind(verify(HS256, &rsa, Algorithm::HS256)),
            ErrorKind::InvalidKeyFormat
        );
        assert_eq!(
            kind(verify(HS256, &rsa, Algorithm::RS256)),
            ErrorKind::InvalidAlgorithm
        );
        // And an HMAC secret never verifies a public-key algorithm.
        let hmac = DecodingKey::from_secret(SECRET);
        assert_eq!(
            kind(verify(ES256, &hmac, Algorithm::ES256)),
            ErrorKind::InvalidKeyFormat
        );
        assert!(matches!(
            (PROVIDER.verifier_factory)(&Algorithm::RS256, &hmac).map(|_| ()),
            Err(e) if *e.kind() == ErrorKind::InvalidKeyFormat
        ));
    }

    #[test]
    fn only_hmac_signs() {
        install();
        let header = jsonwebtoken::Header::new(Algorithm::RS256);
        let key = EncodingKey::from_rsa_der(b"not used");
        let refused = jsonwebtoken::encode(&header, &json!({}), &key).unwrap_err();
        assert_eq!(*refused.kind(), ErrorKind::UnsupportedAlgorithm);
        // An HMAC secret under an RS256 header is refused before any signing.
        let key = EncodingKey::from_secret(SECRET);
        let refused = jsonwebtoken::encode(&header, &json!({}), &key).unwrap_err();
        assert_eq!(*refused.kind(), ErrorKind::InvalidAlgorithm);
        assert!(matches!(
            (PROVIDER.signer_factory)(&Algorithm::ES256, &key).map(|_| ()),
            Err(e) if *e.kind() == ErrorKind::UnsupportedAlgorithm
        ));
    }

    #[test]
    fn install_is_idempotent() {
        install();
        install();
        assert!(PROVIDER.install_default().is_err(), "already the default");
    }
}
