//! Posted forms: every state-changing console request comes through [`Posted`], which signs the
//! member in from the session cookie, refuses cross-site requests (`Origin`, `Sec-Fetch-Site`)
//! and checks the CSRF token (a hidden `_csrf` field, or the `X-CSRF-Token` header htmx sends).
//! A refusal is a 403, audited as `member.denied`.

use super::session::{ConsoleError, Signed};
use crate::http::HttpContext;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::HeaderMap;

/// The fields of an `application/x-www-form-urlencoded` body, in order (checkboxes repeat).
#[derive(Debug, Default)]
pub struct Fields(Vec<(String, String)>);

impl Fields {
    pub fn parse(body: &[u8]) -> Self {
        Fields(serde_urlencoded::from_bytes(body).unwrap_or_default())
    }

    /// The first value of `name`, trimmed; empty when absent.
    pub fn get(&self, name: &str) -> &str {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map_or("", |(_, v)| v.trim())
    }

    /// Every value of `name` (checkboxes).
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn pairs(&self) -> &[(String, String)] {
        &self.0
    }
}

/// A signed-in member's form, from this site, with a valid CSRF token.
pub struct Posted {
    pub who: Signed,
    pub fields: Fields,
}

/// Why a request looks cross-site, if it does. The transport layer already refuses an `Origin`
/// other than ours unless `[http] allowed_origins` lists it (and strips ours); the console
/// accepts no other origin at all, whatever that list says.
pub fn cross_site(headers: &HeaderMap) -> Option<&'static str> {
    if headers.contains_key(axum::http::header::ORIGIN) {
        return Some("the request came from another origin");
    }
    match headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        None | Some("same-origin") | Some("none") => None,
        Some(_) => Some("the request came from another site"),
    }
}

impl FromRequest<HttpContext> for Posted {
    type Rejection = ConsoleError;

    async fn from_request(req: Request, ctx: &HttpContext) -> Result<Self, ConsoleError> {
        let (mut parts, body) = req.into_parts();
        let who = Signed::from_request_parts(&mut parts, ctx).await?;
        let action = format!("{} {}", parts.method, parts.uri.path());
        if let Some(reason) = cross_site(&parts.headers) {
            return Err(who.refuse(ctx, &action, reason).await);
        }
        let bytes = Bytes::from_request(Request::from_parts(parts.clone(), body), ctx)
            .await
            .map_err(|_| ConsoleError::Invalid("the form could not be read".into()))?;
        let fields = Fields::parse(&bytes);
        let sent = parts
            .headers
            .get("x-csrf-token")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| fields.get("_csrf"));
        if !who.csrf_matches(sent) {
            return Err(who
                .refuse(ctx, &action, "missing or wrong CSRF token")
                .await);
        }
        Ok(Posted { who, fields })
    }
}
