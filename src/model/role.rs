//! Roles: who may do what. Ordered: each role may do what the ones below it
//! may. What each action needs is [`super::actions::Action::role`]; the
//! API's route table asks for the same role.

use serde::{Deserialize, Serialize};

/// What a token may do; ordered, each role may do what the ones below it may.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
    strum::IntoStaticStr,
    strum::EnumString,
    strum::VariantArray,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum Role {
    Viewer,
    Operator,
    Admin,
}

impl Role {
    pub const ALL: &'static [Role] = <Role as strum::VariantArray>::VARIANTS;

    pub fn as_str(self) -> &'static str {
        self.into()
    }

    pub fn parse(s: &str) -> Option<Role> {
        s.parse().ok()
    }

    /// Whether this role may do what needs `needed`.
    pub fn may(self, needed: Role) -> bool {
        self >= needed
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered() {
        assert!(Role::Admin.may(Role::Operator));
        assert!(Role::Operator.may(Role::Operator));
        assert!(!Role::Viewer.may(Role::Operator));
        assert!(!Role::Operator.may(Role::Admin));
        for &r in Role::ALL {
            assert_eq!(Role::parse(r.as_str()), Some(r));
        }
        assert_eq!(Role::parse("root"), None);
    }
}
