//! The admin HTTP API under `/api/v1`: everything the CLI does, for members holding a member
//! token, plus the control plane's signed access requests. Handlers only translate: every rule
//! lives in the services, which take the [`MemberCaller`](crate::auth::MemberCaller) built here.
//! Errors have one shape, mapped from [`ServiceError::code`](crate::service::ServiceError::code)
//! in [`error`]. The route table in [`routes`] drives both the router and the OpenAPI document.

pub mod error;
pub mod extract;
mod inbound;
pub mod member;
pub mod openapi;
pub mod routes;

mod agents;
mod assignments;
mod events;
mod work;
mod workspaces;

pub use error::{ApiError, ApiResult};
pub use inbound::REPLAYED_HEADER;
pub use member::Member;

use crate::http::HttpContext;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::any;

/// The API routes, from the route table.
pub fn router(ctx: &HttpContext) -> Router {
    let mut r: Router<HttpContext> = Router::new();
    for route in routes::table() {
        r = r.route(route.path, (route.handler)());
    }
    // Unknown API paths and methods answer in the API's error shape; the catch-all is scoped to
    // `/api/v1` so the rest of the server keeps its own 404s.
    r.route("/api/v1/openapi.json", axum::routing::get(openapi_document))
        .route("/api/v1/{*rest}", any(not_found))
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(ctx.opts.max_body_bytes))
        .layer(middleware::from_fn_with_state(
            ctx.inflight.clone(),
            crate::http::count_in_flight,
        ))
        .with_state(ctx.clone())
}

/// The OpenAPI document, public like any API description; built once.
async fn openapi_document() -> axum::Json<&'static serde_json::Value> {
    static DOC: std::sync::OnceLock<serde_json::Value> = std::sync::OnceLock::new();
    axum::Json(DOC.get_or_init(openapi::document))
}

async fn not_found() -> Response {
    ApiError::not_found("no such API route").into_response()
}

async fn method_not_allowed() -> Response {
    ApiError::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this API route does not take that method",
    )
    .into_response()
}
