//! The closed vocabularies of the domain: statuses, roles, kinds.

use super::ParseError;
use std::fmt;

/// Declares a string-backed enum with `as_str`, `parse`, `ALL`, `Display` and serde as its string.
macro_rules! vocabulary {
    ($(#[$doc:meta])* $name:ident, $what:literal { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, schemars::JsonSchema)]
        pub enum $name {
            $(#[serde(rename = $text)] $variant),+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }

            pub fn parse(raw: &str) -> Result<Self, ParseError> {
                match raw.trim() {
                    $($text => Ok($name::$variant),)+
                    other => Err(ParseError::new(format!(
                        concat!("unknown ", $what, " {:?}; expected one of: {}"),
                        other,
                        [$($text),+].join(", ")
                    ))),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                $name::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

vocabulary!(
    /// Where an agent stands in the access lifecycle (docs/design.md §3).
    AgentStatus, "agent status" {
        Pending => "pending",
        Approved => "approved",
        Denied => "denied",
        Revoked => "revoked",
    }
);

vocabulary!(
    /// What an approved agent says it is doing right now.
    WorkingStatus, "working status" {
        Idle => "idle",
        Working => "working",
        Paused => "paused",
        Error => "error",
    }
);

vocabulary!(
    TaskStatus, "task status" {
        Todo => "todo",
        InProgress => "in_progress",
        Blocked => "blocked",
        Completed => "completed",
        Cancelled => "cancelled",
    }
);

vocabulary!(
    ProjectStatus, "project status" {
        Active => "active",
        Archived => "archived",
    }
);

vocabulary!(
    /// A member's role in a workspace; each role includes the ones below it.
    Role, "role" {
        Read => "read",
        Write => "write",
        Admin => "admin",
    }
);

vocabulary!(
    AssignmentRole, "assignment role" {
        Member => "member",
        Lead => "lead",
    }
);

vocabulary!(
    AssignmentKind, "assignment kind" {
        Project => "project",
        Task => "task",
    }
);

vocabulary!(
    DelegationStatus, "delegation status" {
        Pending => "pending",
        Approved => "approved",
        Denied => "denied",
        Cancelled => "cancelled",
        Expired => "expired",
    }
);

vocabulary!(
    ActorKind, "actor kind" {
        Member => "member",
        Agent => "agent",
        System => "system",
        ControlPlane => "control_plane",
    }
);

vocabulary!(
    /// The typed entries an agent may log (`agent_log_activity`).
    AgentActivityKind, "activity type" {
        TaskStarted => "task_started",
        TaskCompleted => "task_completed",
        TaskFailed => "task_failed",
        PageCreated => "page_created",
        PageUpdated => "page_updated",
        Error => "error",
        Note => "note",
    }
);

impl Role {
    /// Roles are ordered read < write < admin; a role allows everything its inferiors do.
    pub fn allows(self, needed: Role) -> bool {
        self >= needed
    }
}

impl TaskStatus {
    /// Active tasks count toward assignment quotas and show in an agent's default view.
    pub fn is_open(self) -> bool {
        !matches!(self, TaskStatus::Completed | TaskStatus::Cancelled)
    }
}

impl AgentActivityKind {
    /// The event (docs/design.md §4) this entry reports, if any; a note is activity only.
    pub fn event(self) -> Option<EventType> {
        Some(match self {
            AgentActivityKind::TaskStarted => EventType::TaskStarted,
            AgentActivityKind::TaskCompleted => EventType::TaskCompleted,
            AgentActivityKind::TaskFailed => EventType::TaskFailed,
            AgentActivityKind::PageCreated => EventType::PageCreated,
            AgentActivityKind::PageUpdated => EventType::PageUpdated,
            AgentActivityKind::Error => EventType::Error,
            AgentActivityKind::Note => return None,
        })
    }
}

vocabulary!(
    /// Event names of the Parallax control plane (docs/design.md §4), so a Parallax control plane can consume them unchanged.
    EventType, "event type" {
        AccessRequested => "agent.access_requested",
        AccessApproved => "agent.access_approved",
        AccessDenied => "agent.access_denied",
        AccessRevoked => "agent.access_revoked",
        AccessExpired => "agent.access_expired",
        StatusChanged => "agent.status_changed",
        ProjectAssigned => "agent.project_assigned",
        TaskAssigned => "agent.task_assigned",
        Unassigned => "agent.unassigned",
        TaskStarted => "agent.task_started",
        TaskCompleted => "agent.task_completed",
        TaskFailed => "agent.task_failed",
        PageCreated => "agent.page_created",
        PageUpdated => "agent.page_updated",
        Error => "agent.error",
        DelegationRequested => "agent.delegation_requested",
        DelegationApproved => "agent.delegation_approved",
        DelegationDenied => "agent.delegation_denied",
        DelegationCancelled => "agent.delegation_cancelled",
        AuditCheckpoint => "audit.checkpoint",
    }
);

vocabulary!(
    /// Where a webhook delivery stands: `pending` until the control plane answers 2xx
    /// (`delivered`), the give-up age passes (`failed`) or the endpoint answered 410 (`disabled`).
    DeliveryStatus, "delivery status" {
        Pending => "pending",
        Delivered => "delivered",
        Failed => "failed",
        Disabled => "disabled",
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vocabularies_round_trip() {
        for s in TaskStatus::ALL {
            assert_eq!(TaskStatus::parse(s.as_str()).unwrap(), *s);
        }
        for e in EventType::ALL {
            assert_eq!(EventType::parse(e.as_str()).unwrap(), *e);
        }
        let err = TaskStatus::parse("done").unwrap_err();
        assert!(err.0.contains("in_progress"), "{err}");
    }

    #[test]
    fn roles_are_ordered() {
        assert!(Role::Admin.allows(Role::Write));
        assert!(Role::Write.allows(Role::Read));
        assert!(!Role::Read.allows(Role::Write));
        assert!(!Role::Write.allows(Role::Admin));
    }
}
