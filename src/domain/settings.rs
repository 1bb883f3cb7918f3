use super::{ParseError, Permission, PermissionSet};

/// A workspace's agent settings (docs/design.md §1). Stored as JSON; unknown keys are refused
/// so a typo in a settings change is an error, not a silently ignored field. Written in
/// camelCase like every JSON the server emits; the snake_case aliases read rows stored before.
#[derive(
    Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct WorkspaceSettings {
    /// When false, no agent may request access or call a tool in this workspace.
    pub enabled: bool,
    /// Requests whose capabilities all fall in this list (and permissions in the next) skip review.
    #[serde(alias = "auto_approve_capabilities")]
    pub auto_approve_capabilities: Vec<String>,
    #[serde(alias = "auto_approve_permissions")]
    pub auto_approve_permissions: PermissionSet,
    /// Auto-approved grants end after this many hours; none means until revoked.
    #[serde(alias = "auto_approve_max_hours")]
    pub auto_approve_max_hours: Option<u32>,
    #[serde(alias = "max_agents")]
    pub max_agents: u32,
    #[serde(alias = "max_agents_per_project")]
    pub max_agents_per_project: u32,
    #[serde(alias = "max_active_assignments_per_agent")]
    pub max_active_assignments_per_agent: u32,
    /// Granted on approval when the approver names no permissions (intersected with the request).
    #[serde(alias = "default_permissions")]
    pub default_permissions: PermissionSet,
    #[serde(alias = "delegation_requires_approval")]
    pub delegation_requires_approval: bool,
    /// How long a delegation waits for a human before it expires.
    #[serde(alias = "delegation_ttl_hours")]
    pub delegation_ttl_hours: u32,
    /// Lifetime of newly issued API keys; none means they last until rotated or revoked.
    #[serde(alias = "key_ttl_days")]
    pub key_ttl_days: Option<u32>,
    #[serde(alias = "control_plane_url")]
    pub control_plane_url: Option<String>,
    /// Activity older than this is pruned; none keeps it forever.
    #[serde(alias = "activity_retention_days")]
    pub activity_retention_days: Option<u32>,
    /// Sign a checkpoint of the activity chain after this many new entries (1 to 1,000,000);
    /// none: not by count.
    pub checkpoint_every_entries: Option<u32>,
    /// …or when this many minutes (1 to 10,080) have passed since the last one and the chain grew;
    /// none: not by time.
    pub checkpoint_every_minutes: Option<u32>,
    /// MCP requests each agent may make per minute, sustained…
    #[serde(alias = "rate_limit_per_minute")]
    pub rate_limit_per_minute: u32,
    /// …and in a burst above that rate.
    #[serde(alias = "rate_limit_burst")]
    pub rate_limit_burst: u32,
}

impl Default for WorkspaceSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            auto_approve_capabilities: Vec::new(),
            auto_approve_permissions: PermissionSet::default(),
            auto_approve_max_hours: None,
            max_agents: 20,
            max_agents_per_project: 10,
            max_active_assignments_per_agent: 50,
            default_permissions: PermissionSet::new(Permission::DEFAULT_GRANT),
            delegation_requires_approval: true,
            delegation_ttl_hours: 168,
            key_ttl_days: None,
            control_plane_url: None,
            activity_retention_days: None,
            checkpoint_every_entries: Some(1000),
            checkpoint_every_minutes: Some(60),
            rate_limit_per_minute: 600,
            rate_limit_burst: 60,
        }
    }
}

/// `maxAgents` → `max_agents`, so API bodies may name settings as the JSON shows them.
fn snake_case(key: &str) -> String {
    let mut out = String::with_capacity(key.len() + 4);
    for c in key.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// The most entries between two checkpoints a workspace may set.
pub const MAX_CHECKPOINT_ENTRIES: u32 = 1_000_000;
/// The longest time between two checkpoints a workspace may set (a week).
pub const MAX_CHECKPOINT_MINUTES: u32 = 10_080;

/// Names of the settings, in display order, for help text and `settings` listings.
pub const SETTING_KEYS: &[&str] = &[
    "enabled",
    "auto_approve_capabilities",
    "auto_approve_permissions",
    "auto_approve_max_hours",
    "max_agents",
    "max_agents_per_project",
    "max_active_assignments_per_agent",
    "default_permissions",
    "delegation_requires_approval",
    "delegation_ttl_hours",
    "key_ttl_days",
    "control_plane_url",
    "activity_retention_days",
    "checkpoint_every_entries",
    "checkpoint_every_minutes",
    "rate_limit_per_minute",
    "rate_limit_burst",
];

fn optional(v: &str) -> Option<&str> {
    if v.is_empty() || v == "none" {
        None
    } else {
        Some(v)
    }
}

impl WorkspaceSettings {
    /// Applies one `key=value` change as typed on a command line. `none` clears an optional value;
    /// lists are comma separated.
    pub fn apply(&mut self, key: &str, value: &str) -> Result<(), ParseError> {
        let value = value.trim();
        let list = |v: &str| -> Vec<String> {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        };
        let num = |v: &str| -> Result<u32, ParseError> {
            v.parse::<u32>()
                .map_err(|_| ParseError::new(format!("{key} must be a whole number, got {v:?}")))
        };
        let positive = |v: &str| -> Result<u32, ParseError> {
            match num(v)? {
                0 => Err(ParseError::new(format!("{key} must be at least 1"))),
                n => Ok(n),
            }
        };
        let bounded = |v: &str, max: u32| -> Result<u32, ParseError> {
            match positive(v)? {
                n if n > max => Err(ParseError::new(format!("{key} must be at most {max}"))),
                n => Ok(n),
            }
        };
        let boolean = |v: &str| -> Result<bool, ParseError> {
            match v {
                "true" | "yes" | "on" => Ok(true),
                "false" | "no" | "off" => Ok(false),
                _ => Err(ParseError::new(format!(
                    "{key} must be true or false, got {v:?}"
                ))),
            }
        };
        let snake = snake_case(key);
        match snake.as_str() {
            "enabled" => self.enabled = boolean(value)?,
            "auto_approve_capabilities" => self.auto_approve_capabilities = list(value),
            "auto_approve_permissions" => {
                self.auto_approve_permissions = PermissionSet::parse_list(value)?
            }
            "auto_approve_max_hours" => {
                self.auto_approve_max_hours = optional(value).map(positive).transpose()?
            }
            "max_agents" => self.max_agents = positive(value)?,
            "max_agents_per_project" => self.max_agents_per_project = positive(value)?,
            "max_active_assignments_per_agent" => {
                self.max_active_assignments_per_agent = positive(value)?
            }
            "default_permissions" => self.default_permissions = PermissionSet::parse_list(value)?,
            "delegation_requires_approval" => self.delegation_requires_approval = boolean(value)?,
            "delegation_ttl_hours" => self.delegation_ttl_hours = positive(value)?,
            "key_ttl_days" => self.key_ttl_days = optional(value).map(positive).transpose()?,
            "control_plane_url" => {
                self.control_plane_url = match optional(value) {
                    None => None,
                    Some(url) if url.starts_with("http://") || url.starts_with("https://") => {
                        Some(url.to_owned())
                    }
                    Some(url) => {
                        return Err(ParseError::new(format!(
                            "control_plane_url must be an http(s) URL, got {url:?}"
                        )));
                    }
                }
            }
            "activity_retention_days" => {
                self.activity_retention_days = optional(value).map(positive).transpose()?
            }
            "checkpoint_every_entries" => {
                self.checkpoint_every_entries = optional(value)
                    .map(|v| bounded(v, MAX_CHECKPOINT_ENTRIES))
                    .transpose()?
            }
            "checkpoint_every_minutes" => {
                self.checkpoint_every_minutes = optional(value)
                    .map(|v| bounded(v, MAX_CHECKPOINT_MINUTES))
                    .transpose()?
            }
            "rate_limit_per_minute" => self.rate_limit_per_minute = positive(value)?,
            "rate_limit_burst" => self.rate_limit_burst = positive(value)?,
            _ => {
                return Err(ParseError::new(format!(
                    "unknown setting {key:?}; known: {}",
                    SETTING_KEYS.join(", ")
                )));
            }
        }
        Ok(())
    }

    /// Whether a request qualifies for auto-approval: the workspace must have opted in (a non-empty
    /// permission list), and everything requested must be within its lists.
    pub fn auto_approves(&self, capabilities: &[String], permissions: &PermissionSet) -> bool {
        !self.auto_approve_permissions.is_empty()
            && permissions.is_subset(&self.auto_approve_permissions)
            && capabilities
                .iter()
                .all(|c| self.auto_approve_capabilities.contains(c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_apply_and_refuse() {
        let mut s = WorkspaceSettings::default();
        s.apply("max_agents", "3").unwrap();
        s.apply("auto_approve_permissions", "read:tasks,read:pages")
            .unwrap();
        s.apply("activity_retention_days", "30").unwrap();
        s.apply("activity_retention_days", "none").unwrap();
        assert_eq!(s.max_agents, 3);
        assert_eq!(s.activity_retention_days, None);
        assert!(s.apply("max_agents", "0").is_err());
        assert!(
            s.apply("max_agent", "1")
                .unwrap_err()
                .0
                .contains("unknown setting")
        );
        assert!(s.apply("control_plane_url", "ftp://x").is_err());
        assert!(s.apply("enabled", "maybe").is_err());
        s.apply("rate_limit_per_minute", "120").unwrap();
        s.apply("rateLimitBurst", "5").unwrap();
        assert_eq!((s.rate_limit_per_minute, s.rate_limit_burst), (120, 5));
        assert!(s.apply("rate_limit_per_minute", "0").is_err());
        assert!(s.apply("rate_limit_burst", "lots").is_err());
        s.apply("checkpoint_every_entries", "5").unwrap();
        s.apply("checkpoint_every_minutes", "none").unwrap();
        assert_eq!(
            (s.checkpoint_every_entries, s.checkpoint_every_minutes),
            (Some(5), None)
        );
        assert!(s.apply("checkpoint_every_entries", "0").is_err());
        assert!(
            s.apply("checkpoint_every_minutes", "10081")
                .unwrap_err()
                .0
                .contains("at most 10080")
        );
    }

    #[test]
    fn auto_approval_needs_opt_in_and_a_subset() {
        let mut s = WorkspaceSettings::default();
        let perms = PermissionSet::new([Permission::ReadTasks]);
        assert!(!s.auto_approves(&[], &perms), "off by default");
        s.auto_approve_permissions =
            PermissionSet::new([Permission::ReadTasks, Permission::ReadPages]);
        s.auto_approve_capabilities = vec!["summarize".into()];
        assert!(s.auto_approves(&["summarize".into()], &perms));
        assert!(!s.auto_approves(&["deploy".into()], &perms));
        assert!(!s.auto_approves(&[], &PermissionSet::new([Permission::WriteTasks])));
    }

    #[test]
    fn stored_settings_with_unknown_keys_are_refused() {
        assert!(serde_json::from_str::<WorkspaceSettings>(r#"{"max_agnets": 3}"#).is_err());
        let partial: WorkspaceSettings = serde_json::from_str(r#"{"max_agents": 3}"#).unwrap();
        assert_eq!(partial.max_agents_per_project, 10);
        assert_eq!(
            partial.max_agents, 3,
            "rows stored in snake_case still read"
        );
        let json = serde_json::to_value(&partial).unwrap();
        assert_eq!(json["maxAgents"], 3, "written in camelCase: {json}");
    }
}
