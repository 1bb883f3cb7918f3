//! The OpenAPI 3.1 document, generated from the route table and the types' `schemars` schemas.
//! Committed as `schemas/openapi.json`; a test keeps the file and the code in step.

use super::routes::{Access, Route, table};
use schemars::SchemaGenerator;
use schemars::generate::SchemaSettings;
use serde_json::{Map, Value, json};

/// The document, with every schema the routes use under `components/schemas`.
pub fn document() -> Value {
    let mut components = SchemaGenerator::new(
        SchemaSettings::draft2020_12()
            .with(|s| s.definitions_path = "#/components/schemas/".into()),
    );
    let mut paths = Map::new();
    for route in table() {
        let op = operation(&route, &mut components);
        let entry = paths
            .entry(route.path.to_owned())
            .or_insert_with(|| json!({}));
        entry[route.method.to_ascii_lowercase()] = op;
    }
    let mut schemas = components.take_definitions(true);
    schemas.insert(
        "Error".into(),
        json!({
            "type": "object",
            "description": "Every error answer. `code` is stable: not_found, invalid, forbidden, conflict, quota_exceeded, unauthenticated, method_not_allowed, rate_limited, unavailable, internal.",
            "required": ["error"],
            "properties": { "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": { "code": { "type": "string" }, "message": { "type": "string" } }
            }}
        }),
    );
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "parallax-mcp admin API",
            "version": "v1",
            "description": "Everything the parallax-mcp CLI does, for members holding a member token (`parallax-mcp member token`), plus the control plane's signed access requests."
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "memberToken": { "type": "http", "scheme": "bearer", "bearerFormat": "JWT" },
                "webhookSignature": {
                    "type": "apiKey", "in": "header", "name": "webhook-signature",
                    "description": "Standard Webhooks: HMAC-SHA256 over `{webhook-id}.{webhook-timestamp}.{body}` with the workspace's secret; send webhook-id and webhook-timestamp too."
                }
            }
        }
    })
}

fn operation(route: &Route, g: &mut SchemaGenerator) -> Value {
    let mut params: Vec<Value> = path_params(route.path)
        .map(|name| json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string" } }))
        .collect();
    if let Some(query) = route.query {
        // Query parameters are the properties of one struct, inlined.
        let mut inline = SchemaGenerator::new(
            SchemaSettings::draft2020_12().with(|s| s.inline_subschemas = true),
        );
        let schema = query(&mut inline).to_value();
        let required: Vec<&str> = schema["required"]
            .as_array()
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if let Some(props) = schema["properties"].as_object() {
            for (name, prop) in props {
                let mut prop = prop.clone();
                let description = prop.as_object_mut().and_then(|o| o.remove("description"));
                drop_null(&mut prop);
                let mut p = json!({ "name": name, "in": "query", "required": required.contains(&name.as_str()), "schema": prop });
                if let Some(d) = description {
                    p["description"] = d;
                }
                params.push(p);
            }
        }
    }
    let (who, security) = match route.access {
        Access::Member(role) => (
            format!("Needs a member token for the workspace, with role {role} or higher."),
            json!([{ "memberToken": [] }]),
        ),
        Access::Signed => (
            "Authenticated only by the Standard Webhooks signature with the workspace's secret; a replayed webhook-id gets the first answer again (header `webhook-replayed: true`).".to_owned(),
            json!([{ "webhookSignature": [] }]),
        ),
    };
    let error = json!({ "$ref": "#/components/schemas/Error" });
    let error_response = |d: &str| json!({ "description": d, "content": { "application/json": { "schema": error.clone() } } });
    let mut responses = Map::new();
    responses.insert(
        route.status.to_string(),
        if route.stream {
            json!({ "description": "A stream of server-sent events, each `data:` one of these", "content": { "text/event-stream": { "schema": (route.response)(g).to_value() } } })
        } else {
            json!({ "description": "Success", "content": { "application/json": { "schema": (route.response)(g).to_value() } } })
        },
    );
    responses.insert(
        "400".into(),
        error_response("Malformed input, unknown fields or invalid values"),
    );
    responses.insert(
        "401".into(),
        error_response(match route.access {
            Access::Member(_) => "Missing or refused credential (with `WWW-Authenticate: Bearer`)",
            Access::Signed => {
                "Missing, stale or wrong signature (with `WWW-Authenticate: Webhook-Signature`)"
            }
        }),
    );
    if matches!(route.access, Access::Member(_)) {
        responses.insert(
            "403".into(),
            error_response("The member's role does not allow this"),
        );
        responses.insert(
            "404".into(),
            error_response("Not found, or in another workspace"),
        );
        responses.insert(
            "409".into(),
            error_response("Conflicts with the current state, or a quota is exceeded"),
        );
        responses.insert(
            "429".into(),
            error_response(
                "Too many failed authentications from this address (with `Retry-After`)",
            ),
        );
    }
    let mut op = json!({
        "operationId": route.operation_id,
        "summary": route.summary,
        "description": who,
        "parameters": params,
        "responses": responses,
        "security": security,
    });
    if let Access::Member(role) = route.access {
        op["x-required-role"] = json!(role.as_str());
    }
    if let Some(body) = route.request {
        op["requestBody"] = json!({
            "required": true,
            "content": { "application/json": { "schema": body(g).to_value() } }
        });
    }
    op
}

/// The `{name}` segments of a path.
pub fn path_params(path: &str) -> impl Iterator<Item = &str> {
    path.split('/')
        .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
}

/// An absent query parameter is how "none" is said; the schema need not offer `null`.
fn drop_null(schema: &mut Value) {
    if let Some(types) = schema.get_mut("type").and_then(Value::as_array_mut) {
        types.retain(|t| t != "null");
        if types.len() == 1 {
            schema["type"] = types[0].clone();
        }
    }
    if let Some(values) = schema.get_mut("enum").and_then(Value::as_array_mut) {
        values.retain(|v| !v.is_null());
    }
}
