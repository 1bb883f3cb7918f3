//! Signed access requests from the control plane (Standard Webhooks). The signature is the only
//! credential: it is checked against the workspace's active secrets before the body is read, and a
//! replayed `webhook-id` is answered from its stored receipt instead of being processed again.

use super::access::request_access_in;
use super::*;
use crate::store::InboundReceipt;

/// The signed parts of an inbound webhook, straight from the request.
#[derive(Debug, Clone, Copy)]
pub struct SignedMessage<'a> {
    pub webhook_id: Option<&'a str>,
    pub timestamp: Option<&'a str>,
    pub signature: Option<&'a str>,
    pub body: &'a [u8],
}

/// The control plane's access request, as it sends it. Unknown fields are refused, so a
/// typo cannot silently drop what the sender meant.
#[derive(Debug, Clone, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct InboundAccessRequest {
    /// The Parallax agent id.
    pub agent_id: String,
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// Permission names, e.g. `read:tasks`; empty asks for the workspace's defaults.
    #[serde(default)]
    pub requested_permissions: Vec<String>,
    #[serde(default)]
    pub metadata: Option<Value>,
    #[serde(default)]
    pub endpoint: Option<String>,
    #[serde(default)]
    pub justification: Option<String>,
}

/// What the transport sends back: a status and a JSON body. A replay gets the stored one.
#[derive(Clone)]
pub struct InboundReply {
    pub status_code: u16,
    /// May hold a new API key (auto-approval): `Debug` leaves it out.
    pub body: String,
    pub replayed: bool,
}

impl std::fmt::Debug for InboundReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InboundReply")
            .field("status_code", &self.status_code)
            .field("replayed", &self.replayed)
            .finish_non_exhaustive()
    }
}

/// Refusal text for an unknown workspace and for one without a secret: the same, so an unsigned
/// caller cannot tell which workspaces exist.
const NO_SECRET: &str = "no webhook secret is configured for this workspace";

impl Service {
    /// Verifies and processes a signed access request for the workspace `slug` (or id). `render` turns
    /// the outcome into the reply; it is called with the key for the live answer and without it
    /// for the stored receipt (keys are never stored in clear). Refusals are not stored: they
    /// change nothing, so a retry is simply checked again.
    pub async fn receive_access_request(
        &self,
        slug: &str,
        msg: SignedMessage<'_>,
        render: impl Fn(&Agent, bool, Option<&ApiKey>) -> (u16, Value),
    ) -> ServiceResult<InboundReply> {
        let at = now();
        let ws = {
            let tx = self.store.read().await?;
            let ws = match tx.workspace_by_slug(slug).await? {
                Some(ws) => Some(ws),
                None => tx.workspace_by_id(slug).await?,
            }
            .ok_or_else(|| ServiceError::Unauthenticated(NO_SECRET.into()))?;
            let secrets = tx.active_webhook_secrets(&ws.id, at).await?;
            if secrets.is_empty() {
                return Err(ServiceError::Unauthenticated(NO_SECRET.into()));
            }
            verify_webhook(
                &secrets,
                msg.webhook_id,
                msg.timestamp,
                msg.signature,
                msg.body,
                at.timestamp(),
            )
            .map_err(|e| ServiceError::Unauthenticated(e.to_string()))?;
            ws
        };
        // Verified above, so present.
        let webhook_id = msg.webhook_id.unwrap_or_default();
        let req: InboundAccessRequest = serde_json::from_slice(msg.body)
            .map_err(|e| ServiceError::Invalid(format!("invalid access request: {e}")))?;

        let tx = self.store.write().await?;
        // The workspace lock serialises concurrent deliveries of one id: the second one waits,
        // then finds the first one's receipt.
        tx.lock_workspace(&ws.id).await?;
        tx.prune_inbound_receipts(at - chrono::Duration::seconds(2 * TOLERANCE_SECS))
            .await?;
        if let Some(r) = tx.inbound_receipt(&ws.id, webhook_id).await? {
            return Ok(InboundReply {
                status_code: r.status_code,
                body: r.response_body,
                replayed: true,
            });
        }
        let outcome = request_access_in(
            &tx,
            &ws.id,
            &Actor::ControlPlane,
            AccessRequest {
                agent_id: req.agent_id,
                name: req.name,
                description: req.description,
                capabilities: req.capabilities,
                permissions: req.requested_permissions,
                endpoint: req.endpoint,
                metadata: req.metadata,
                justification: req.justification,
            },
        )
        .await?;
        let (status_code, live) = render(&outcome.agent, outcome.created, outcome.api_key.as_ref());
        let (_, stored) = render(&outcome.agent, outcome.created, None);
        tx.insert_inbound_receipt(
            &ws.id,
            webhook_id,
            &InboundReceipt {
                status_code,
                response_body: stored.to_string(),
                received_at: at,
            },
        )
        .await?;
        tx.commit().await?;
        Ok(InboundReply {
            status_code,
            body: live.to_string(),
            replayed: false,
        })
    }
}
