use super::ParseError;
use std::collections::BTreeSet;
use std::fmt;

/// What an agent may do. Names follow the Parallax control plane's vocabulary so a control plane can speak them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Permission {
    ReadTasks,
    WriteTasks,
    ReadProjects,
    WriteProjects,
    ReadPages,
    WritePages,
    ReadAgents,
    AssignTasks,
    DelegateAgents,
}

impl Permission {
    pub const ALL: [Permission; 9] = [
        Permission::ReadTasks,
        Permission::WriteTasks,
        Permission::ReadProjects,
        Permission::WriteProjects,
        Permission::ReadPages,
        Permission::WritePages,
        Permission::ReadAgents,
        Permission::AssignTasks,
        Permission::DelegateAgents,
    ];

    /// The grant on approval when the approver names none (docs/design.md §2).
    pub const DEFAULT_GRANT: [Permission; 3] = [
        Permission::ReadTasks,
        Permission::ReadProjects,
        Permission::ReadPages,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Permission::ReadTasks => "read:tasks",
            Permission::WriteTasks => "write:tasks",
            Permission::ReadProjects => "read:projects",
            Permission::WriteProjects => "write:projects",
            Permission::ReadPages => "read:pages",
            Permission::WritePages => "write:pages",
            Permission::ReadAgents => "read:agents",
            Permission::AssignTasks => "assign:tasks",
            Permission::DelegateAgents => "delegate:agents",
        }
    }

    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        let raw = raw.trim();
        Permission::ALL
            .into_iter()
            .find(|p| p.as_str() == raw)
            .ok_or_else(|| {
                let known: Vec<_> = Permission::ALL.iter().map(|p| p.as_str()).collect();
                ParseError::new(format!(
                    "unknown permission {raw:?}; known: {}",
                    known.join(", ")
                ))
            })
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for Permission {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for Permission {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Permission::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Named by its wire form, so API schemas list the permission names.
impl schemars::JsonSchema for Permission {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Permission".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let names: Vec<&str> = Permission::ALL.iter().map(|p| p.as_str()).collect();
        schemars::json_schema!({ "type": "string", "enum": names })
    }
}

/// A set of permissions, ordered so it prints and stores the same way every time.
#[derive(
    Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(transparent)]
pub struct PermissionSet(BTreeSet<Permission>);

impl PermissionSet {
    pub fn new(items: impl IntoIterator<Item = Permission>) -> Self {
        Self(items.into_iter().collect())
    }

    /// Parses names separated by commas or whitespace; duplicates collapse.
    pub fn parse_list(raw: &str) -> Result<Self, ParseError> {
        raw.split(|c: char| c == ',' || c.is_whitespace())
            .filter(|s| !s.is_empty())
            .map(Permission::parse)
            .collect::<Result<BTreeSet<_>, _>>()
            .map(Self)
    }

    pub fn parse_all<S: AsRef<str>>(items: &[S]) -> Result<Self, ParseError> {
        items
            .iter()
            .map(|s| Permission::parse(s.as_ref()))
            .collect::<Result<BTreeSet<_>, _>>()
            .map(Self)
    }

    pub fn contains(&self, p: Permission) -> bool {
        self.0.contains(&p)
    }

    pub fn is_subset(&self, other: &PermissionSet) -> bool {
        self.0.is_subset(&other.0)
    }

    pub fn intersection(&self, other: &PermissionSet) -> PermissionSet {
        Self(self.0.intersection(&other.0).copied().collect())
    }

    /// Members of `self` that `other` lacks.
    pub fn difference(&self, other: &PermissionSet) -> PermissionSet {
        Self(self.0.difference(&other.0).copied().collect())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = Permission> + '_ {
        self.0.iter().copied()
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.0.iter().map(|p| p.as_str()).collect()
    }
}

impl fmt::Display for PermissionSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.names().join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_permission_round_trips() {
        for p in Permission::ALL {
            assert_eq!(Permission::parse(p.as_str()).unwrap(), p);
        }
        assert!(
            Permission::parse("admin:everything")
                .unwrap_err()
                .0
                .contains("read:tasks")
        );
    }

    #[test]
    fn sets_parse_and_compare() {
        let set = PermissionSet::parse_list("read:tasks, write:tasks read:tasks").unwrap();
        assert_eq!(set.to_string(), "read:tasks,write:tasks");
        let small = PermissionSet::new([Permission::ReadTasks]);
        assert!(small.is_subset(&set));
        assert!(!set.is_subset(&small));
        assert_eq!(set.difference(&small).to_string(), "write:tasks");
        assert!(PermissionSet::parse_list("").unwrap().is_empty());
    }
}
