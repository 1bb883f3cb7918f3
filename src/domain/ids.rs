use super::ParseError;
use std::fmt;

/// A new time-ordered id (UUID v7): sorting ids sorts rows by creation time.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

macro_rules! string_newtype {
    ($name:ident) => {
        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
            pub fn into_string(self) -> String {
                self.0
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

/// The requester's agent id (the Parallax agent id); unique within a workspace.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct AgentId(String);
string_newtype!(AgentId);

impl AgentId {
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        let ok_char =
            |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '@');
        if raw.is_empty() || raw.len() > 128 || !raw.chars().all(ok_char) {
            return Err(ParseError::new(format!(
                "invalid agent id {raw:?}: use 1-128 characters of letters, digits and - _ . : @"
            )));
        }
        Ok(Self(raw.to_owned()))
    }
}

/// A workspace's short name, used in the CLI and URLs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
pub struct WorkspaceSlug(String);
string_newtype!(WorkspaceSlug);

impl WorkspaceSlug {
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        let ok = (2..=64).contains(&raw.len())
            && raw
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !raw.starts_with('-')
            && !raw.ends_with('-');
        if !ok {
            return Err(ParseError::new(format!(
                "invalid workspace slug {raw:?}: use 2-64 lowercase letters, digits and inner hyphens"
            )));
        }
        Ok(Self(raw.to_owned()))
    }
}

/// A member's email address, kept lowercase so lookups are exact.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
pub struct Email(String);
string_newtype!(Email);

impl Email {
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        let lower = raw.trim().to_ascii_lowercase();
        let valid = match lower.split_once('@') {
            Some((local, domain)) => {
                !local.is_empty()
                    && !domain.is_empty()
                    && !domain.contains('@')
                    && lower.len() <= 254
                    && !lower.chars().any(|c| c.is_whitespace() || c.is_control())
            }
            None => false,
        };
        if !valid {
            return Err(ParseError::new(format!("invalid email address {raw:?}")));
        }
        Ok(Self(lower))
    }
}

/// An id of a row we created (project, task, page, assignment, delegation): a UUID.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
pub struct RecordId(String);
string_newtype!(RecordId);

impl RecordId {
    /// Parses a UUID in any case; malformed ids are refused before they reach the store.
    pub fn parse(kind: &str, raw: &str) -> Result<Self, ParseError> {
        uuid::Uuid::parse_str(raw.trim())
            .map(|u| Self(u.hyphenated().to_string()))
            .map_err(|_| ParseError::new(format!("invalid {kind} id {raw:?}: expected a UUID")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_ids() {
        assert!(AgentId::parse("parallax-agent_01.x:y@z").is_ok());
        assert!(AgentId::parse("").is_err());
        assert!(AgentId::parse("has space").is_err());
        assert!(AgentId::parse(&"a".repeat(129)).is_err());
    }

    #[test]
    fn slugs_and_emails() {
        assert!(WorkspaceSlug::parse("acme-1").is_ok());
        assert!(WorkspaceSlug::parse("Acme").is_err());
        assert!(WorkspaceSlug::parse("-acme").is_err());
        assert_eq!(
            Email::parse(" Alice@Example.COM ").unwrap().as_str(),
            "alice@example.com"
        );
        assert!(Email::parse("no-at-sign").is_err());
        assert!(Email::parse("a@b@c").is_err());
    }

    #[test]
    fn record_ids_are_normalised() {
        let id = new_id();
        assert_eq!(
            RecordId::parse("task", &id.to_uppercase())
                .unwrap()
                .as_str(),
            id
        );
        assert!(RecordId::parse("task", "nope").is_err());
    }
}
