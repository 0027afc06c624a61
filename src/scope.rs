//! The scopes a token may hold. This file is the one place a scope's name is spelled: every
//! check elsewhere goes through [`Scope`], so a typo is a compile error, not an open door.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A scope. Events and stored rows keep scopes as their names (the log outlives any one
/// version of this enum); this type is how code reads and checks them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// Holds every other scope.
    Admin,
    /// Run admin console commands.
    ConsoleExec,
    /// Read the log's contents and state.
    LogsRead,
    RegistryRead,
    RegistryWrite,
    /// Check other tokens through `POST /v1/verify`.
    TokensVerify,
    /// Rotate itself through `POST /v1/tokens/self/rotate` (reuse detection applies).
    TokensRotateSelf,
    /// Report leaked tokens through `POST /v1/leaks` (a secret scanner's token).
    LeaksReport,
}

/// In the OpenAPI document a scope is its name, one of [`Scope::ALL`].
impl utoipa::PartialSchema for Scope {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .enum_values(Some(Scope::ALL.map(Scope::as_str)))
            .into()
    }
}

impl utoipa::ToSchema for Scope {}

impl Scope {
    /// Every scope, in the canonical order tokens store them in.
    pub const ALL: [Scope; 8] = [
        Scope::Admin,
        Scope::ConsoleExec,
        Scope::LogsRead,
        Scope::RegistryRead,
        Scope::RegistryWrite,
        Scope::TokensVerify,
        Scope::TokensRotateSelf,
        Scope::LeaksReport,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Scope::Admin => "admin",
            Scope::ConsoleExec => "console:exec",
            Scope::LogsRead => "logs:read",
            Scope::RegistryRead => "registry:read",
            Scope::RegistryWrite => "registry:write",
            Scope::TokensVerify => "tokens:verify",
            Scope::TokensRotateSelf => "tokens:rotate-self",
            Scope::LeaksReport => "leaks:report",
        }
    }

    /// `admin, console:exec, ...`: for messages that list what is accepted.
    pub fn known() -> String {
        Scope::ALL.map(Scope::as_str).join(", ")
    }

    /// Whether a token holding `held` (scope names, as stored) holds this scope.
    pub fn held_by(self, held: &[String]) -> bool {
        held.iter().any(|s| s == self.as_str())
    }

    /// Whether `held` holds at least one of `any`; an empty `any` asks for nothing.
    pub fn any_held(any: &[Scope], held: &[String]) -> bool {
        any.is_empty() || any.iter().any(|s| s.held_by(held))
    }

    /// `console:exec or admin`.
    pub fn alternatives(any: &[Scope]) -> String {
        any.iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(" or ")
    }
}

/// A set of scopes as bits over [`Scope::ALL`]: what the in-memory token entry keeps instead
/// of scope names, so checking a scope on the authentication path reads one byte.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct ScopeSet(u8);

impl ScopeSet {
    const fn bit(scope: Scope) -> u8 {
        1 << scope as u8
    }

    /// The known scopes among `names` (as stored), and the names this version does not know,
    /// in their stored order: the log may hold a scope an older or newer version spelled.
    pub fn parse<'a>(names: impl IntoIterator<Item = &'a str>) -> (ScopeSet, Vec<&'a str>) {
        let mut set = ScopeSet::default();
        let mut unknown = Vec::new();
        for name in names {
            match name.parse::<Scope>() {
                Ok(scope) => set.0 |= Self::bit(scope),
                Err(_) => unknown.push(name),
            }
        }
        (set, unknown)
    }

    pub fn holds(self, scope: Scope) -> bool {
        self.0 & Self::bit(scope) != 0
    }

    /// Whether this set holds at least one of `any`; an empty `any` asks for nothing.
    pub fn any_of(self, any: &[Scope]) -> bool {
        any.is_empty() || any.iter().any(|s| self.holds(*s))
    }

    /// The scopes held, in canonical order.
    pub fn iter(self) -> impl Iterator<Item = Scope> {
        Scope::ALL.into_iter().filter(move |s| self.holds(*s))
    }
}

impl fmt::Debug for ScopeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set()
            .entries(self.iter().map(Scope::as_str))
            .finish()
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not one of [`Scope::ALL`]. Its message lists the known scopes and shows the
/// name only when it is short enough to be a typo rather than pasted data.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown scope {shown}; known scopes: {known}", known = Scope::known())]
pub struct UnknownScope {
    shown: String,
}

impl UnknownScope {
    fn new(raw: &str) -> UnknownScope {
        UnknownScope {
            shown: crate::text::shown(raw),
        }
    }
}

impl FromStr for Scope {
    type Err = UnknownScope;

    fn from_str(raw: &str) -> Result<Scope, UnknownScope> {
        Scope::ALL
            .into_iter()
            .find(|s| s.as_str() == raw)
            .ok_or_else(|| UnknownScope::new(raw))
    }
}

impl Serialize for Scope {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Scope {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Scope, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Scope;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "one of {}", Scope::known())
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Scope, E> {
                v.parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_scope_round_trips_through_its_name_and_json() {
        for scope in Scope::ALL {
            assert_eq!(scope.as_str().parse::<Scope>(), Ok(scope));
            let json = serde_json::to_string(&scope).expect("serializes");
            assert_eq!(json, format!("\"{scope}\""));
            assert_eq!(serde_json::from_str::<Scope>(&json).expect("parses"), scope);
        }
    }

    #[test]
    fn an_unknown_scope_lists_the_known_ones_and_hides_long_input() {
        let short = "console:run".parse::<Scope>().unwrap_err().to_string();
        assert!(short.contains("\"console:run\""), "{short}");
        assert!(short.contains("console:exec, logs:read"), "{short}");
        let pasted = "tl_test_0123456789012345678901234567890123456789012345";
        let long = pasted.parse::<Scope>().unwrap_err().to_string();
        assert!(!long.contains(pasted), "{long}");
        let control = "a\u{1b}[8m".parse::<Scope>().unwrap_err().to_string();
        assert!(!control.contains('\u{1b}'), "{control}");
    }

    #[test]
    fn a_scope_set_holds_what_its_names_hold_and_keeps_unknown_names() {
        let names = ["logs:read", "registry:admin", "admin", "logs:read"];
        let (set, unknown) = ScopeSet::parse(names);
        assert_eq!(unknown, ["registry:admin"]);
        assert_eq!(
            set.iter().collect::<Vec<_>>(),
            [Scope::Admin, Scope::LogsRead]
        );
        let owned: Vec<String> = names.iter().map(|s| (*s).to_owned()).collect();
        for scope in Scope::ALL {
            assert_eq!(set.holds(scope), scope.held_by(&owned), "{scope}");
        }
        assert!(set.any_of(&[]) && set.any_of(&[Scope::TokensVerify, Scope::LogsRead]));
        assert!(!set.any_of(&[Scope::TokensVerify]));
        assert_eq!(format!("{set:?}"), r#"{"admin", "logs:read"}"#);
    }

    #[test]
    fn holding_is_checked_by_name() {
        let held = vec!["logs:read".to_owned()];
        assert!(Scope::LogsRead.held_by(&held));
        assert!(!Scope::Admin.held_by(&held));
        assert!(Scope::any_held(&[], &held));
        assert!(!Scope::any_held(&[Scope::ConsoleExec, Scope::Admin], &held));
        assert_eq!(
            Scope::alternatives(&[Scope::ConsoleExec, Scope::Admin]),
            "console:exec or admin"
        );
    }
}
