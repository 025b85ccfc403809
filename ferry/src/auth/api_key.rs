//! API keys: long random secrets mapped to principals.

use std::path::Path;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{Authenticator, Principal, invalid_credentials};
use crate::tls::PeerIdentity;
use crate::{Metadata, Status};

/// Authenticates callers by API key, sent as `x-api-key: <key>` or
/// `authorization: ApiKey <key>` (the first is checked first).
///
/// Keys are kept only as SHA-256 digests and every presented key is compared with every known
/// digest in constant time, so neither timing nor memory reveals a key. A call without a key is
/// `Ok(None)`; an unknown key is `UNAUTHENTICATED`.
///
/// Keys come from code or from a file with one key per line, `<key> <subject> [role ...]`
/// (blank lines and `#` comments ignored):
///
/// ```text
/// # billing's batch job
/// k-7f3e9a1c0b5d4e2f8a6c billing reader
/// k-0c2b4d6e8f1a3c5e7b9d ops admin reader
/// ```
///
/// ```
/// use ferry::auth::{ApiKeyAuthenticator, Authenticator, Principal};
/// let keys = ApiKeyAuthenticator::new().key("k-7f3e9a1c", Principal::new("api-key", "billing"));
/// let mut md = ferry::Metadata::new();
/// md.insert("x-api-key", "k-7f3e9a1c");
/// let who = keys.authenticate(&md, "/calculator.v1.Calculator/Add", None).unwrap().unwrap();
/// assert_eq!(who.subject, "billing");
/// ```
#[derive(Clone, Default)]
pub struct ApiKeyAuthenticator {
    keys: Vec<([u8; 32], Principal)>,
}

impl ApiKeyAuthenticator {
    /// No keys yet.
    pub fn new() -> ApiKeyAuthenticator {
        ApiKeyAuthenticator::default()
    }

    /// Accepts `key` as `principal` (whose `kind` is usually `"api-key"`).
    pub fn key(mut self, key: impl AsRef<[u8]>, principal: Principal) -> ApiKeyAuthenticator {
        self.keys.push((digest(key.as_ref()), principal));
        self
    }

    /// Reads keys from a file in the format above.
    pub fn from_file(path: impl AsRef<Path>) -> std::io::Result<ApiKeyAuthenticator> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)?;
        ApiKeyAuthenticator::parse(&text).map_err(|(line, what)| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{}:{line}: {what}", path.display()),
            )
        })
    }

    /// Parses keys from text in the file format; an error names the line.
    pub fn parse(text: &str) -> Result<ApiKeyAuthenticator, (usize, &'static str)> {
        let mut keys = ApiKeyAuthenticator::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut words = line.split_whitespace();
            let (Some(key), Some(subject)) = (words.next(), words.next()) else {
                return Err((i + 1, "expected `<key> <subject> [role ...]`"));
            };
            if key.len() < 16 {
                return Err((i + 1, "API keys must be at least 16 characters"));
            }
            keys = keys.key(key, Principal::new("api-key", subject).with_roles(words));
        }
        Ok(keys)
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no key is configured.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

fn digest(key: &[u8]) -> [u8; 32] {
    Sha256::digest(key).into()
}

fn presented_key(metadata: &Metadata) -> Option<&str> {
    if let Some(key) = metadata.get("x-api-key") {
        return Some(key.trim());
    }
    let value = metadata.get("authorization")?;
    let (scheme, key) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("apikey").then(|| key.trim())
}

impl Authenticator for ApiKeyAuthenticator {
    fn authenticate(
        &self,
        metadata: &Metadata,
        method: &str,
        _peer: Option<&PeerIdentity>,
    ) -> Result<Option<Principal>, Status> {
        let Some(key) = presented_key(metadata) else {
            return Ok(None);
        };
        let presented = digest(key.as_bytes());
        let mut found = None;
        for (known, principal) in &self.keys {
            if bool::from(known.ct_eq(&presented)) && found.is_none() {
                found = Some(principal);
            }
        }
        match found {
            Some(principal) => Ok(Some(principal.clone())),
            None => {
                tracing::debug!(method, "unknown API key");
                Err(invalid_credentials())
            }
        }
    }
}

impl std::fmt::Debug for ApiKeyAuthenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeyAuthenticator")
            .field("keys", &self.keys.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Code;

    fn md(key: &str, value: &str) -> Metadata {
        let mut md = Metadata::new();
        md.insert(key, value);
        md
    }

    #[test]
    fn header_forms_missing_and_unknown() {
        let keys =
            ApiKeyAuthenticator::parse("# comment\n\nk-0123456789abcdef billing reader writer\n")
                .unwrap_or_default();
        assert_eq!(keys.len(), 1);
        let who = keys.authenticate(&md("x-api-key", "k-0123456789abcdef"), "/a/b", None);
        let who = who.ok().flatten();
        assert_eq!(who.as_ref().map(|p| p.subject.as_str()), Some("billing"));
        assert_eq!(
            who.map(|p| p.roles),
            Some(vec!["reader".into(), "writer".into()])
        );
        let who = keys.authenticate(
            &md("authorization", "ApiKey k-0123456789abcdef"),
            "/a/b",
            None,
        );
        assert!(matches!(who, Ok(Some(_))));
        assert!(matches!(
            keys.authenticate(&Metadata::new(), "/a/b", None),
            Ok(None)
        ));
        assert!(matches!(
            keys.authenticate(&md("authorization", "Bearer x"), "/a/b", None),
            Ok(None)
        ));
        let wrong = keys.authenticate(&md("x-api-key", "k-0123456789abcdeF"), "/a/b", None);
        let status = wrong.err();
        assert_eq!(
            status.as_ref().map(Status::code),
            Some(Code::Unauthenticated)
        );
        assert_eq!(
            status.as_ref().map(Status::message),
            Some(super::super::INVALID_CREDENTIALS)
        );
    }

    #[test]
    fn file_errors_name_the_line() {
        assert_eq!(
            ApiKeyAuthenticator::parse("\nonlykey\n").err(),
            Some((2, "expected `<key> <subject> [role ...]`"))
        );
        assert!(ApiKeyAuthenticator::parse("short subject").is_err());
    }
}
