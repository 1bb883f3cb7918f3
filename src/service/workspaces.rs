//! Workspaces, their settings and their members.

use super::*;
use crate::store::StoreError;

impl Service {
    /// Creates a workspace and its first admin. This is the operator's bootstrap step (it needs
    /// access to the database, not a member), so it takes no caller.
    pub async fn create_workspace(
        &self,
        slug: &str,
        name: &str,
        admin_email: &str,
        admin_name: &str,
    ) -> ServiceResult<(Workspace, Member)> {
        let slug = WorkspaceSlug::parse(slug)?;
        let email = Email::parse(admin_email)?;
        let name = required_text("workspace name", name, 200)?;
        let at = now();
        let ws = Workspace {
            id: new_id(),
            slug: slug.into_string(),
            name,
            settings: WorkspaceSettings::default(),
            created_at: at,
        };
        let admin = Member {
            id: new_id(),
            workspace_id: ws.id.clone(),
            name: if admin_name.trim().is_empty() {
                email.as_str().to_owned()
            } else {
                bounded_text("member name", admin_name.trim(), 200)?
            },
            email: email.into_string(),
            role: Role::Admin,
            created_at: at,
        };
        let tx = self.store.write().await?;
        if tx.workspace_by_slug(&ws.slug).await?.is_some() {
            return Err(ServiceError::Conflict(format!(
                "workspace {:?} already exists",
                ws.slug
            )));
        }
        // A concurrent creation of the same slug can pass the check above (PostgreSQL runs both
        // transactions at once); the unique index then refuses it, and that is the same conflict.
        match tx.insert_workspace(&ws).await {
            Err(StoreError::Conflict(_)) => {
                return Err(ServiceError::Conflict(format!(
                    "workspace {:?} already exists",
                    ws.slug
                )));
            }
            other => other?,
        }
        tx.insert_member(&admin).await?;
        tx.insert_activity(
            &Activity::new(&ws.id, &Actor::System, "workspace.created")
                .description(&format!(
                    "workspace {} created with admin {}",
                    ws.slug, admin.email
                ))
                .build(),
        )
        .await?;
        tx.commit().await?;
        Ok((ws, admin))
    }

    /// Every workspace; an operator view like `create_workspace`.
    pub async fn list_workspaces(&self) -> ServiceResult<Vec<Workspace>> {
        Ok(self.store.read().await?.list_workspaces().await?)
    }

    /// The caller's workspace as it is now (the caller's copy may be older).
    pub async fn workspace(&self, caller: &MemberCaller) -> ServiceResult<Workspace> {
        self.require(caller, Role::Read, "viewing the workspace")
            .await?;
        let ws = &caller.workspace().id;
        self.store
            .read()
            .await?
            .workspace_by_id(ws)
            .await?
            .ok_or_else(|| ServiceError::not_found("workspace", ws))
    }

    /// Applies `key=value` changes to the settings, all or none.
    pub async fn update_settings(
        &self,
        caller: &MemberCaller,
        changes: &[(String, String)],
    ) -> ServiceResult<Workspace> {
        self.require(caller, Role::Admin, "changing settings")
            .await?;
        if changes.is_empty() {
            return Err(ServiceError::Invalid(
                "no setting to change: use --set key=value".into(),
            ));
        }
        let tx = self.store.write().await?;
        let mut ws = tx
            .workspace_by_id(&caller.workspace().id)
            .await?
            .ok_or_else(|| ServiceError::not_found("workspace", &caller.workspace().id))?;
        for (k, v) in changes {
            ws.settings.apply(k, v)?;
        }
        tx.update_workspace_settings(&ws.id, &ws.settings, now())
            .await?;
        // Setting the control plane URL again is how an endpoint that answered 410 is re-enabled.
        if changes.iter().any(|(k, _)| k == "control_plane_url")
            && ws.settings.control_plane_url.is_some()
        {
            tx.enable_webhooks(&ws.id, now()).await?;
        }
        let changed: serde_json::Map<_, _> = changes
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        tx.insert_activity(
            &Activity::new(&ws.id, &caller.actor(), "workspace.settings_updated")
                .description(&format!(
                    "settings changed: {}",
                    changes
                        .iter()
                        .map(|(k, _)| k.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
                .metadata(Value::Object(changed))
                .build(),
        )
        .await?;
        tx.commit().await?;
        Ok(ws)
    }

    pub async fn add_member(
        &self,
        caller: &MemberCaller,
        email: &str,
        name: &str,
        role: Role,
    ) -> ServiceResult<Member> {
        self.require(caller, Role::Admin, "adding members").await?;
        let email = Email::parse(email)?;
        let ws = &caller.workspace().id;
        let member = Member {
            id: new_id(),
            workspace_id: ws.clone(),
            name: if name.trim().is_empty() {
                email.as_str().to_owned()
            } else {
                bounded_text("member name", name.trim(), 200)?
            },
            email: email.into_string(),
            role,
            created_at: now(),
        };
        let tx = self.store.write().await?;
        if tx.member_by_email(ws, &member.email).await?.is_some() {
            return Err(ServiceError::Conflict(format!(
                "{} is already a member",
                member.email
            )));
        }
        // As for workspaces: a concurrent addition of the same email meets the unique index.
        match tx.insert_member(&member).await {
            Err(StoreError::Conflict(_)) => {
                return Err(ServiceError::Conflict(format!(
                    "{} is already a member",
                    member.email
                )));
            }
            other => other?,
        }
        tx.insert_activity(
            &Activity::new(ws, &caller.actor(), "member.added")
                .description(&format!("{} added as {}", member.email, member.role))
                .build(),
        )
        .await?;
        tx.commit().await?;
        Ok(member)
    }

    pub async fn list_members(&self, caller: &MemberCaller) -> ServiceResult<Vec<Member>> {
        self.require(caller, Role::Read, "listing members").await?;
        Ok(self
            .store
            .read()
            .await?
            .list_members(&caller.workspace().id)
            .await?)
    }

    /// Changes a member's role; the last admin cannot be demoted, so a workspace always has one.
    pub async fn set_member_role(
        &self,
        caller: &MemberCaller,
        email: &str,
        role: Role,
    ) -> ServiceResult<Member> {
        self.require(caller, Role::Admin, "changing roles").await?;
        let email = Email::parse(email)?;
        let ws = &caller.workspace().id;
        let tx = self.store.write().await?;
        tx.lock_workspace(ws).await?;
        let mut member = tx
            .member_by_email(ws, email.as_str())
            .await?
            .ok_or_else(|| ServiceError::not_found("member", email.as_str()))?;
        if role != Role::Admin {
            ensure_not_last_admin(&tx, ws, &member).await?;
        }
        let old = member.role;
        tx.update_member_role(ws, &member.id, role).await?;
        member.role = role;
        tx.insert_activity(
            &Activity::new(ws, &caller.actor(), "member.role_changed")
                .description(&format!("{email}: {old} -> {role}"))
                .build(),
        )
        .await?;
        tx.commit().await?;
        Ok(member)
    }

    /// Removes a member and returns the removed row. Their tokens stop working at once (auth
    /// looks the member up on every request). The last admin cannot be removed, not even by
    /// themselves, so a workspace always keeps one.
    pub async fn remove_member(&self, caller: &MemberCaller, email: &str) -> ServiceResult<Member> {
        self.require(caller, Role::Admin, "removing members")
            .await?;
        let email = Email::parse(email)?;
        let ws = &caller.workspace().id;
        let tx = self.store.write().await?;
        // Serialises with role changes and other removals, so two admins cannot remove each other.
        tx.lock_workspace(ws).await?;
        let member = tx
            .member_by_email(ws, email.as_str())
            .await?
            .ok_or_else(|| ServiceError::not_found("member", email.as_str()))?;
        ensure_not_last_admin(&tx, ws, &member).await?;
        if !tx.delete_member(ws, &member.id).await? {
            return Err(ServiceError::not_found("member", email.as_str()));
        }
        tx.insert_activity(
            &Activity::new(ws, &caller.actor(), "member.removed")
                .description(&format!("{} ({}) removed", member.email, member.role))
                .metadata(json!({ "email": member.email, "role": member.role }))
                .build(),
        )
        .await?;
        tx.commit().await?;
        Ok(member)
    }

    /// Makes a new webhook signing secret the workspace's current one and returns it (shown once).
    /// The secrets active now stay valid for `grace_secs`, so the control plane can switch over.
    pub async fn rotate_webhook_secret(
        &self,
        caller: &MemberCaller,
        grace_secs: u64,
    ) -> ServiceResult<WebhookSecret> {
        self.require(caller, Role::Admin, "rotating the webhook secret")
            .await?;
        let grace = i64::try_from(grace_secs)
            .ok()
            .filter(|g| *g <= MAX_SECRET_GRACE_SECS)
            .ok_or_else(|| {
                ServiceError::Invalid(format!(
                    "grace period must be at most {MAX_SECRET_GRACE_SECS} seconds"
                ))
            })?;
        let ws = &caller.workspace().id;
        let at = now();
        let secret = WebhookSecret::generate();
        let tx = self.store.write().await?;
        tx.lock_workspace(ws).await?;
        tx.rotate_webhook_secret(ws, &secret, at, at + chrono::Duration::seconds(grace))
            .await?;
        tx.insert_activity(
            &Activity::new(ws, &caller.actor(), "workspace.webhook_secret_rotated")
                .description(&format!(
                    "new webhook secret; previous ones valid for {grace_secs} s"
                ))
                .metadata(json!({ "graceSecs": grace_secs }))
                .build(),
        )
        .await?;
        tx.commit().await?;
        Ok(secret)
    }
}

/// The longest a rotated-out secret may stay valid: 30 days.
pub const MAX_SECRET_GRACE_SECS: i64 = 30 * 24 * 3600;
/// How long a rotated-out secret stays valid unless told otherwise: 24 hours.
pub const DEFAULT_SECRET_GRACE_SECS: u64 = 24 * 3600;

/// Refuses to demote or remove `member` when it is the workspace's last admin. Call with the
/// workspace locked, so two admins cannot each pass the check for the other.
async fn ensure_not_last_admin(tx: &Tx, ws: &str, member: &Member) -> ServiceResult<()> {
    if member.role != Role::Admin {
        return Ok(());
    }
    let admins = tx
        .list_members(ws)
        .await?
        .iter()
        .filter(|m| m.role == Role::Admin)
        .count();
    if admins <= 1 {
        return Err(ServiceError::Conflict(format!(
            "{} is the last admin; make another member admin first",
            member.email
        )));
    }
    Ok(())
}
