//! The member behind a request: `Authorization: Bearer <member token>`, and the workspace in the
//! path must be the token's. Another workspace's path is a 404 (it does not exist from the
//! caller's side), and the attempt is audited in the caller's workspace.

use super::error::{ApiError, ApiResult};
use crate::auth::MemberCaller;
use crate::http::HttpContext;
use crate::http::oauth;
use crate::http::ratelimit::retry_after_secs;
use axum::extract::{FromRequestParts, RawPathParams};
use axum::http::StatusCode;
use axum::http::request::Parts;

/// An authenticated member of the workspace named in the path.
pub struct Member(pub MemberCaller);

impl FromRequestParts<HttpContext> for Member {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, ctx: &HttpContext) -> ApiResult<Self> {
        // Refused tokens count against the address, as on `/mcp` and `/oauth/token`.
        // A valid token passes even from a blocked address; see `FailedAuthLimiter`.
        let peer = oauth::peer(&parts.extensions);
        let bearer = oauth::bearer(&parts.headers)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| ApiError::unauthenticated("missing bearer member token"))?
            .to_owned();
        if let Some(wait) = ctx.failed_auth.credential_blocked(&bearer) {
            return Err(ApiError::rate_limited(retry_after_secs(wait)));
        }
        let caller = match authenticate(ctx, &bearer).await {
            Ok(c) => c,
            Err(e) => {
                if e.status == StatusCode::UNAUTHORIZED
                    && let Some(wait) = ctx.failed_auth.failed(peer, Some(&bearer))
                {
                    return Err(ApiError::rate_limited(retry_after_secs(wait)));
                }
                return Err(e);
            }
        };
        let params = RawPathParams::from_request_parts(parts, ctx)
            .await
            .map_err(|e| ApiError::invalid(e.body_text()))?;
        let workspace = params
            .iter()
            .find(|(k, _)| *k == "workspace")
            .map(|(_, v)| v.to_owned())
            .ok_or_else(|| ApiError::not_found("no workspace in the path"))?;
        let ws = caller.workspace();
        if workspace != ws.slug && workspace != ws.id {
            return Err(ctx
                .service
                .refuse_other_workspace(&caller, &workspace)
                .await
                .into());
        }
        Ok(Member(caller))
    }
}

/// A member token, verified and its member re-read. Agent keys and agent tokens are refused
/// here: they are not member tokens (wrong shape, type or audience).
async fn authenticate(ctx: &HttpContext, bearer: &str) -> ApiResult<MemberCaller> {
    match ctx.tokens.member(bearer).await? {
        Ok(caller) => Ok(caller),
        Err(refusal) => Err(ApiError::unauthenticated(format!(
            "invalid member token: {refusal}"
        ))),
    }
}
