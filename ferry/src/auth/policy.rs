//! Per-method authorization: who may call what.

use std::collections::HashMap;
use std::path::Path;

use serde::Deserialize;

use super::{INVALID_CREDENTIALS, PERMISSION_DENIED, Principal};
use crate::Status;

/// Which callers a [`Policy`] lets call a method.
///
/// A rule allows a call when it allows unauthenticated callers, or when the caller is
/// authenticated and the rule allows any authenticated caller, or names the caller's subject,
/// one of its roles or one of its scopes. A rule that names nobody denies everyone.
///
/// ```
/// use ferry::auth::{Principal, Rule};
/// let rule = Rule::new().role("admin").scope("calc:write");
/// assert!(rule.allows(Some(&Principal::new("jwt", "ann").with_roles(["admin"]))));
/// assert!(!rule.allows(Some(&Principal::new("jwt", "bob"))));
/// assert!(!rule.allows(None));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rule {
    allow_unauthenticated: bool,
    authenticated: bool,
    subjects: Vec<String>,
    roles: Vec<String>,
    scopes: Vec<String>,
}

impl Rule {
    /// A rule that allows nobody yet; add subjects, roles or scopes.
    pub fn new() -> Rule {
        Rule::default()
    }

    /// A rule that allows every caller, with or without credentials (health checks, reflection).
    pub fn allow_unauthenticated() -> Rule {
        Rule {
            allow_unauthenticated: true,
            ..Rule::default()
        }
    }

    /// A rule that allows every authenticated caller.
    pub fn authenticated() -> Rule {
        Rule {
            authenticated: true,
            ..Rule::default()
        }
    }

    /// Also allows the principal with this subject.
    pub fn subject(mut self, subject: impl Into<String>) -> Rule {
        self.subjects.push(subject.into());
        self
    }

    /// Also allows principals with this role.
    pub fn role(mut self, role: impl Into<String>) -> Rule {
        self.roles.push(role.into());
        self
    }

    /// Also allows principals with this scope.
    pub fn scope(mut self, scope: impl Into<String>) -> Rule {
        self.scopes.push(scope.into());
        self
    }

    /// Whether this rule lets `principal` (`None`: unauthenticated) call.
    pub fn allows(&self, principal: Option<&Principal>) -> bool {
        if self.allow_unauthenticated {
            return true;
        }
        let Some(p) = principal else {
            return false;
        };
        self.authenticated
            || self.subjects.contains(&p.subject)
            || self.roles.iter().any(|r| p.has_role(r))
            || self.scopes.iter().any(|s| p.has_scope(s))
    }
}

/// What a [`Policy`] does with a method no rule names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fallback {
    Deny,
    Authenticated,
}

/// Per-method authorization rules, checked by [`AuthLayer`](super::AuthLayer) after
/// authentication.
///
/// Rules are keyed by method pattern: a full path `/package.Service/Method`, a whole service
/// `/package.Service/*`, or every method `*`. The most specific pattern that matches decides
/// alone. A method no pattern matches is decided by the fallback: [`Policy::new`] lets any
/// authenticated caller through, [`Policy::deny_by_default`] refuses everyone.
///
/// Refusals: a caller without credentials where credentials are needed gets `UNAUTHENTICATED`;
/// an authenticated caller the rule does not allow, or any caller of a method denied to all,
/// gets `PERMISSION_DENIED`.
///
/// ```
/// use ferry::auth::{Policy, Principal, Rule};
/// let policy = Policy::deny_by_default()
///     .rule("/grpc.health.v1.Health/*", Rule::allow_unauthenticated())
///     .rule("/calculator.v1.Calculator/*", Rule::new().role("calc"))
///     .rule("/calculator.v1.Calculator/Divide", Rule::new().subject("ann"));
/// let bob = Principal::new("jwt", "bob").with_roles(["calc"]);
/// assert!(policy.check("/calculator.v1.Calculator/Add", Some(&bob)).is_ok());
/// assert!(policy.check("/calculator.v1.Calculator/Divide", Some(&bob)).is_err());
/// assert!(policy.check("/grpc.health.v1.Health/Check", None).is_ok());
/// assert!(policy.check("/other.v1.Other/Call", Some(&bob)).is_err());
/// ```
///
/// The same policy as a file for [`Policy::from_file`] (TOML; JSON with the same shape works
/// for a `.json` file):
///
/// ```toml
/// # "deny" (refuse methods no rule names) or "authenticated" (any authenticated caller)
/// default = "deny"
///
/// [[rules]]
/// method = "/grpc.health.v1.Health/*"
/// allow_unauthenticated = true
///
/// [[rules]]
/// method = "/calculator.v1.Calculator/*"
/// roles = ["calc"]
///
/// [[rules]]
/// method = "/calculator.v1.Calculator/Divide"
/// subjects = ["ann"]
/// # also: scopes = ["calc:write"], authenticated = true
/// ```
#[derive(Clone, Debug)]
pub struct Policy {
    rules: HashMap<String, Rule>,
    fallback: Fallback,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy::new()
    }
}

/// Why a policy file was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The file could not be read.
    #[error("cannot read policy file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The file is not valid TOML or JSON of the expected shape.
    #[error("invalid policy {what}: {detail}")]
    Parse {
        /// Which input.
        what: String,
        /// The parser's message.
        detail: String,
    },
    /// A rule's method pattern is not `*`, `/pkg.Service/*` or `/pkg.Service/Method`.
    #[error(
        "invalid method pattern {0:?}: expected `*`, `/package.Service/*` or `/package.Service/Method`"
    )]
    Pattern(String),
    /// Two rules for the same pattern.
    #[error("two rules for method pattern {0:?}")]
    Duplicate(String),
    /// `default` is neither `deny` nor `authenticated`.
    #[error("invalid default {0:?}: expected \"deny\" or \"authenticated\"")]
    Default(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    #[serde(default)]
    default: Option<String>,
    #[serde(default)]
    rules: Vec<RuleFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    method: String,
    #[serde(default)]
    allow_unauthenticated: bool,
    #[serde(default)]
    authenticated: bool,
    #[serde(default)]
    subjects: Vec<String>,
    #[serde(default)]
    roles: Vec<String>,
    #[serde(default)]
    scopes: Vec<String>,
}

impl Policy {
    /// No rules; any authenticated caller may call any method.
    pub fn new() -> Policy {
        Policy {
            rules: HashMap::new(),
            fallback: Fallback::Authenticated,
        }
    }

    /// No rules; nobody may call anything until a rule allows it.
    pub fn deny_by_default() -> Policy {
        Policy {
            rules: HashMap::new(),
            fallback: Fallback::Deny,
        }
    }

    /// Sets the rule for a method pattern, replacing any earlier rule for the same pattern.
    ///
    /// # Panics
    ///
    /// If `pattern` is not `*`, `/package.Service/*` or `/package.Service/Method`: a typo would
    /// otherwise silently never match (the way a router refuses a malformed route).
    pub fn rule(mut self, pattern: impl Into<String>, rule: Rule) -> Policy {
        let pattern = pattern.into();
        if let Err(e) = validate_pattern(&pattern) {
            panic!("{e}");
        }
        self.rules.insert(pattern, rule);
        self
    }

    /// Reads a policy file: JSON if the name ends in `.json`, else TOML.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Policy, PolicyError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let what = path.display().to_string();
        if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("json"))
        {
            let file = serde_json::from_str(&text).map_err(|e| PolicyError::Parse {
                what,
                detail: e.to_string(),
            })?;
            Policy::from_parsed(file)
        } else {
            Policy::from_toml_with_name(&text, what)
        }
    }

    /// Parses a policy in the TOML format shown above.
    pub fn from_toml(text: &str) -> Result<Policy, PolicyError> {
        Policy::from_toml_with_name(text, "TOML".to_owned())
    }

    /// Parses a policy in the JSON form of the format shown above.
    pub fn from_json(text: &str) -> Result<Policy, PolicyError> {
        let file = serde_json::from_str(text).map_err(|e| PolicyError::Parse {
            what: "JSON".to_owned(),
            detail: e.to_string(),
        })?;
        Policy::from_parsed(file)
    }

    fn from_toml_with_name(text: &str, what: String) -> Result<Policy, PolicyError> {
        let file = toml::from_str(text).map_err(|e| PolicyError::Parse {
            what,
            detail: e.to_string(),
        })?;
        Policy::from_parsed(file)
    }

    fn from_parsed(file: PolicyFile) -> Result<Policy, PolicyError> {
        let mut policy = match file.default.as_deref() {
            None | Some("authenticated") => Policy::new(),
            Some("deny") => Policy::deny_by_default(),
            Some(other) => return Err(PolicyError::Default(other.to_owned())),
        };
        for r in file.rules {
            validate_pattern(&r.method)?;
            let rule = Rule {
                allow_unauthenticated: r.allow_unauthenticated,
                authenticated: r.authenticated,
                subjects: r.subjects,
                roles: r.roles,
                scopes: r.scopes,
            };
            if policy.rules.insert(r.method.clone(), rule).is_some() {
                return Err(PolicyError::Duplicate(r.method));
            }
        }
        Ok(policy)
    }

    /// The rule that decides `method`, if any pattern matches.
    pub fn rule_for(&self, method: &str) -> Option<&Rule> {
        if let Some(rule) = self.rules.get(method) {
            return Some(rule);
        }
        if let Some(slash) = method.rfind('/').filter(|&i| i > 0) {
            let mut service = String::with_capacity(slash + 2);
            service.push_str(&method[..=slash]);
            service.push('*');
            if let Some(rule) = self.rules.get(&service) {
                return Some(rule);
            }
        }
        self.rules.get("*")
    }

    /// Whether `principal` (`None`: unauthenticated) may call `method`; the refusal is the
    /// status to answer with.
    pub fn check(&self, method: &str, principal: Option<&Principal>) -> Result<(), Status> {
        let allowed = match self.rule_for(method) {
            Some(rule) => rule.allows(principal),
            None => self.fallback == Fallback::Authenticated && principal.is_some(),
        };
        if allowed {
            return Ok(());
        }
        let who = principal.map(|p| p.subject.as_str());
        tracing::debug!(method, ?who, "call refused by policy");
        let denied_to_all = match self.rule_for(method) {
            Some(rule) => *rule == Rule::default(),
            None => self.fallback == Fallback::Deny,
        };
        if principal.is_none() && !denied_to_all {
            Err(Status::unauthenticated(INVALID_CREDENTIALS))
        } else {
            Err(Status::permission_denied(PERMISSION_DENIED))
        }
    }
}

fn validate_pattern(pattern: &str) -> Result<(), PolicyError> {
    if pattern == "*" {
        return Ok(());
    }
    let ok = pattern
        .strip_prefix('/')
        .and_then(|rest| rest.split_once('/'))
        .is_some_and(|(service, method)| {
            !service.is_empty()
                && !method.is_empty()
                && !service.contains('*')
                && (method == "*" || !method.contains(['*', '/']))
        });
    if ok {
        Ok(())
    } else {
        Err(PolicyError::Pattern(pattern.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Code;

    fn code(r: Result<(), Status>) -> Option<Code> {
        r.err().map(|s| s.code())
    }

    #[test]
    fn allow_and_deny_by_subject_role_scope() {
        let policy = Policy::deny_by_default()
            .rule("/a.S/BySubject", Rule::new().subject("ann"))
            .rule("/a.S/ByRole", Rule::new().role("admin"))
            .rule("/a.S/ByScope", Rule::new().scope("s:write"));
        let ann = Principal::new("jwt", "ann");
        let admin = Principal::new("jwt", "bob").with_roles(["admin"]);
        let writer = Principal::new("jwt", "cy").with_scopes(["s:write"]);
        assert!(policy.check("/a.S/BySubject", Some(&ann)).is_ok());
        assert_eq!(
            code(policy.check("/a.S/BySubject", Some(&admin))),
            Some(Code::PermissionDenied)
        );
        assert!(policy.check("/a.S/ByRole", Some(&admin)).is_ok());
        assert_eq!(
            code(policy.check("/a.S/ByRole", Some(&writer))),
            Some(Code::PermissionDenied)
        );
        assert!(policy.check("/a.S/ByScope", Some(&writer)).is_ok());
        assert_eq!(
            code(policy.check("/a.S/ByScope", None)),
            Some(Code::Unauthenticated)
        );
        // default deny: no rule names it, so nobody, not even with credentials
        assert_eq!(
            code(policy.check("/a.S/Other", Some(&ann))),
            Some(Code::PermissionDenied)
        );
        assert_eq!(
            code(policy.check("/a.S/Other", None)),
            Some(Code::PermissionDenied)
        );
    }

    #[test]
    fn default_authenticated_and_specificity() {
        let policy = Policy::new()
            .rule("*", Rule::new().role("any"))
            .rule("/a.S/*", Rule::authenticated())
            .rule("/a.S/Open", Rule::allow_unauthenticated());
        let plain = Principal::new("mtls", "x");
        assert!(policy.check("/a.S/Open", None).is_ok());
        assert!(policy.check("/a.S/M", Some(&plain)).is_ok());
        assert_eq!(
            code(policy.check("/a.S/M", None)),
            Some(Code::Unauthenticated)
        );
        assert_eq!(
            code(policy.check("/b.T/M", Some(&plain))),
            Some(Code::PermissionDenied)
        );
        let open = Policy::new();
        assert!(open.check("/b.T/M", Some(&plain)).is_ok());
        assert_eq!(
            code(open.check("/b.T/M", None)),
            Some(Code::Unauthenticated)
        );
    }

    #[test]
    fn patterns() {
        for good in ["*", "/a.S/*", "/a.S/M", "/S/M"] {
            assert!(validate_pattern(good).is_ok(), "{good}");
        }
        for bad in [
            "", "a.S/M", "/a.S", "/a.S/", "//M", "/a.*/M", "/a.S/M*", "/a.S/M/x", "**",
        ] {
            assert!(validate_pattern(bad).is_err(), "{bad}");
        }
    }

    #[test]
    #[should_panic(expected = "invalid method pattern")]
    fn bad_pattern_in_code_panics() {
        let _ = Policy::new().rule("calculator.v1.Calculator/Add", Rule::authenticated());
    }

    const TOML: &str = r#"
default = "deny"

[[rules]]
method = "/grpc.health.v1.Health/*"
allow_unauthenticated = true

[[rules]]
method = "/calculator.v1.Calculator/*"
roles = ["calc"]
scopes = ["calc:all"]

[[rules]]
method = "/calculator.v1.Calculator/Divide"
subjects = ["ann"]
"#;

    #[test]
    fn config_file_parses() {
        let policy = Policy::from_toml(TOML).unwrap_or_else(|e| panic!("{e}"));
        let calc = Principal::new("jwt", "bob").with_roles(["calc"]);
        assert!(policy.check("/grpc.health.v1.Health/Check", None).is_ok());
        assert!(
            policy
                .check("/calculator.v1.Calculator/Add", Some(&calc))
                .is_ok()
        );
        let scoped = Principal::new("jwt", "eve").with_scopes(["calc:all"]);
        assert!(
            policy
                .check("/calculator.v1.Calculator/Add", Some(&scoped))
                .is_ok()
        );
        assert!(
            policy
                .check("/calculator.v1.Calculator/Divide", Some(&calc))
                .is_err()
        );
        assert!(
            policy
                .check(
                    "/calculator.v1.Calculator/Divide",
                    Some(&Principal::new("jwt", "ann"))
                )
                .is_ok()
        );
        assert!(policy.check("/x.Y/Z", Some(&calc)).is_err());

        let json = r#"{"default":"authenticated","rules":[{"method":"/a.S/M","roles":["r"]}]}"#;
        let policy = Policy::from_json(json).unwrap_or_else(|e| panic!("{e}"));
        assert!(policy.check("/a.S/M", Some(&calc)).is_err());
        assert!(policy.check("/a.S/N", Some(&calc)).is_ok());
    }

    #[test]
    fn config_file_errors() {
        let typo = "[[rules]]\nmethod = \"/a.S/M\"\nrole = [\"x\"]\n";
        assert!(matches!(
            Policy::from_toml(typo),
            Err(PolicyError::Parse { .. })
        ));
        let pattern = "[[rules]]\nmethod = \"a.S/M\"\n";
        assert!(matches!(
            Policy::from_toml(pattern),
            Err(PolicyError::Pattern(_))
        ));
        let dup = "[[rules]]\nmethod = \"*\"\n[[rules]]\nmethod = \"*\"\n";
        assert!(matches!(
            Policy::from_toml(dup),
            Err(PolicyError::Duplicate(_))
        ));
        assert!(matches!(
            Policy::from_toml("default = \"allow\""),
            Err(PolicyError::Default(_))
        ));
        assert!(matches!(
            Policy::from_file("/nonexistent/policy.toml"),
            Err(PolicyError::Read { .. })
        ));
    }
}
