//! Console sign-ins as audit entries: `member.signed_in` and `member.sign_in_failed`, each in
//! its own transaction (a refused sign-in has no change to ride along with).

use super::{Activity, Service, ServiceResult};
use crate::domain::{Actor, Member, Workspace};
use serde_json::json;

impl Service {
    /// Records that `member` signed in to the console with `method` (`oidc`, `link`).
    pub async fn record_sign_in(
        &self,
        workspace: &Workspace,
        member: &Member,
        method: &str,
    ) -> ServiceResult<()> {
        let entry = Activity::new(
            &workspace.id,
            &Actor::Member(member.email.clone()),
            "member.signed_in",
        )
        .outcome("allowed")
        .description(&format!("{} signed in ({method})", member.email))
        .metadata(json!({ "method": method }))
        .build();
        let tx = self.store.write().await?;
        tx.insert_activity(&entry).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Records a refused sign-in to `workspace`: who (when known), how, and why (`reason` is a
    /// fixed word, `detail` the sentence shown to the person).
    pub async fn record_sign_in_failure(
        &self,
        workspace: &Workspace,
        email: Option<&str>,
        method: &str,
        reason: &str,
        detail: &str,
    ) -> ServiceResult<()> {
        let actor = match email {
            Some(email) => Actor::Member(email.to_owned()),
            None => Actor::System,
        };
        let entry = Activity::new(&workspace.id, &actor, "member.sign_in_failed")
            .outcome("denied")
            .description(detail)
            .metadata(json!({ "method": method, "reason": reason, "email": email }))
            .build();
        let tx = self.store.write().await?;
        tx.insert_activity(&entry).await?;
        tx.commit().await?;
        Ok(())
    }
}
