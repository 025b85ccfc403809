//! JWT bearer tokens, verified with keys from a JWKS file or given in code.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

use super::{Authenticator, Principal, TOKEN_EXPIRED, bearer_token, invalid_credentials};
use crate::file_watch;
use crate::tls::PeerIdentity;
use crate::{Metadata, Status};

/// Clock skew allowed on `exp` and `nbf` unless configured otherwise.
const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);

/// Authenticates callers by a JWT in `authorization: Bearer <token>`.
///
/// **Keys.** RS256/RS384/RS512/PS256…, ES256/ES384 and EdDSA public keys come from a JWKS file
/// (reloaded when it changes, every 10 s by default) or PEM in code; HS256/384/512 shared
/// secrets from code. Each key has one algorithm, taken from the JWK's `alg` or, without one,
/// from its type (RSA → RS256, P-256 → ES256, P-384 → ES384, Ed25519 → EdDSA, oct → HS256).
///
/// **What is refused**, each as `UNAUTHENTICATED` "missing or invalid credentials" (or "token
/// expired") with the reason logged at debug level:
/// - a token whose header `alg` differs from its key's algorithm. The key decides, never the
///   header: `alg: none` and algorithm confusion (an HS256 token "signed" with an RSA public key
///   as the secret) fail here;
/// - a `kid` no key has; a token without `kid` when there is more than one key;
/// - a bad signature or malformed token (bad base64, bad JSON);
/// - `exp` passed or `nbf` not reached, beyond a leeway of 30 s; a token without `exp` or `sub`;
/// - `iss` or `aud` not among those configured (when configured, they are required).
///
/// **The principal** (kind `"jwt"`): `sub` as the subject; roles from the `roles` claim; scopes
/// from `scope` (space-separated) and `scp` (array or string); all claims in
/// [`Principal::claims`]. Claim names are configurable and may be dotted paths
/// (`realm_access.roles`).
///
/// A call without `authorization: Bearer` is `Ok(None)`, left to other authenticators. Any
/// bearer token that is not a valid JWT is refused, so put no other bearer-token authenticator
/// in the same chain.
///
/// ```no_run
/// # fn demo() -> Result<(), ferry::auth::JwtError> {
/// use ferry::auth::JwtAuthenticator;
/// let jwt = JwtAuthenticator::builder()
///     .jwks_file("/etc/ferry/jwks.json")
///     .issuer("https://id.acme.example")
///     .audience("calculator")
///     .build()?;
/// # let _ = jwt; Ok(()) }
/// ```
#[derive(Clone)]
pub struct JwtAuthenticator {
    shared: Arc<Shared>,
}

struct Shared {
    settings: Settings,
    jwks_path: Option<PathBuf>,
    static_keys: Vec<Arc<NamedKey>>,
    keys: RwLock<Arc<Vec<Arc<NamedKey>>>>,
    jwks_fingerprint: Mutex<Option<u64>>,
    reload_interval: Option<Duration>,
}

struct Settings {
    issuers: Vec<String>,
    audiences: Vec<String>,
    leeway: Duration,
    roles_claims: Vec<String>,
    scopes_claims: Vec<String>,
}

struct NamedKey {
    kid: Option<String>,
    algorithm: Algorithm,
    key: DecodingKey,
}

/// Why a [`JwtAuthenticator`] could not be built or its key set reloaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JwtError {
    /// The JWKS file could not be read.
    #[error("cannot read JWKS file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The JWKS file is not a JSON object with a `keys` array.
    #[error("invalid JWKS {path}: {detail}")]
    Jwks {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// A key given in code is unusable.
    #[error("invalid key {kid:?}: {detail}")]
    Key {
        /// The key's id.
        kid: Option<String>,
        /// What is wrong.
        detail: String,
    },
    /// There is no usable key at all.
    #[error("no usable verification key: add a JWKS file with `jwks_file` or a key in code")]
    NoKeys,
}

/// Builds a [`JwtAuthenticator`].
#[derive(Default)]
pub struct JwtAuthenticatorBuilder {
    jwks_path: Option<PathBuf>,
    keys: Vec<Result<NamedKey, JwtError>>,
    issuers: Vec<String>,
    audiences: Vec<String>,
    leeway: Option<Duration>,
    roles_claims: Option<Vec<String>>,
    scopes_claims: Option<Vec<String>>,
    reload_interval: Option<Option<Duration>>,
}

impl JwtAuthenticator {
    /// Starts a configuration.
    pub fn builder() -> JwtAuthenticatorBuilder {
        JwtAuthenticatorBuilder::default()
    }

    /// Rereads the JWKS file now. On error the old keys stay in use.
    pub fn reload(&self) -> Result<(), JwtError> {
        let Some(path) = &self.shared.jwks_path else {
            return Ok(());
        };
        let fingerprint = file_watch::fingerprint(std::slice::from_ref(path)).ok();
        let loaded = load_jwks(path)?;
        self.install(loaded);
        *lock(&self.shared.jwks_fingerprint) = fingerprint;
        tracing::info!("JWKS reloaded from {}", path.display());
        Ok(())
    }

    fn install(&self, from_file: Vec<Arc<NamedKey>>) {
        let mut all = from_file;
        all.extend(self.shared.static_keys.iter().cloned());
        *self
            .shared
            .keys
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(all);
    }

    fn reload_changed(&self) {
        let Some(path) = &self.shared.jwks_path else {
            return;
        };
        let now = match file_watch::fingerprint(std::slice::from_ref(path)) {
            Ok(now) => now,
            Err(e) => {
                tracing::warn!(
                    "JWKS {} unreadable, keeping the old keys: {e}",
                    path.display()
                );
                return;
            }
        };
        {
            let mut last = lock(&self.shared.jwks_fingerprint);
            if *last == Some(now) {
                return;
            }
            *last = Some(now);
        }
        match load_jwks(path) {
            Ok(keys) => {
                self.install(keys);
                tracing::info!("JWKS reloaded from {}", path.display());
            }
            Err(e) => tracing::warn!("JWKS not reloaded, keeping the old keys: {e}"),
        }
    }

    fn current_keys(&self) -> Arc<Vec<Arc<NamedKey>>> {
        self.shared
            .keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Verifies `token` and returns its principal; the error is the reason (for logs).
    fn verify(&self, token: &str) -> Result<Principal, Refusal> {
        let header = jsonwebtoken::decode_header(token).map_err(Refusal::Token)?;
        let keys = self.current_keys();
        let key = match &header.kid {
            Some(kid) => keys
                .iter()
                .find(|k| k.kid.as_deref() == Some(kid.as_str()))
                .ok_or(Refusal::UnknownKid)?,
            None if keys.len() == 1 => &keys[0],
            None => return Err(Refusal::NoKid),
        };
        // The key's algorithm, never the header's: a mismatch is `InvalidAlgorithm`.
        let mut validation = Validation::new(key.algorithm);
        let settings = &self.shared.settings;
        validation.leeway = settings.leeway.as_secs();
        validation.validate_nbf = true;
        let mut required = vec!["exp", "sub"];
        if settings.audiences.is_empty() {
            validation.validate_aud = false;
        } else {
            validation.set_audience(&settings.audiences);
            required.push("aud");
        }
        if !settings.issuers.is_empty() {
            validation.set_issuer(&settings.issuers);
            required.push("iss");
        }
        validation.set_required_spec_claims(&required);
        let data =
            jsonwebtoken::decode::<Value>(token, &key.key, &validation).map_err(Refusal::Token)?;
        let claims = data.claims;
        let subject = claims
            .get("sub")
            .and_then(Value::as_str)
            .ok_or(Refusal::NoSubject)?
            .to_owned();
        let roles = collect_claims(&claims, &settings.roles_claims);
        let scopes = collect_claims(&claims, &settings.scopes_claims);
        Ok(Principal::new("jwt", subject)
            .with_roles(roles)
            .with_scopes(scopes)
            .with_claims(claims))
    }
}

/// Why a token was refused: logged, never sent.
#[derive(Debug)]
enum Refusal {
    Token(jsonwebtoken::errors::Error),
    UnknownKid,
    NoKid,
    NoSubject,
}

impl Authenticator for JwtAuthenticator {
    fn authenticate(
        &self,
        metadata: &Metadata,
        method: &str,
        _peer: Option<&PeerIdentity>,
    ) -> Result<Option<Principal>, Status> {
        let Some(token) = bearer_token(metadata) else {
            return Ok(None);
        };
        match self.verify(token) {
            Ok(principal) => Ok(Some(principal)),
            Err(refusal) => {
                tracing::debug!(method, reason = ?refusal, "JWT refused");
                match refusal {
                    Refusal::Token(e) if matches!(e.kind(), ErrorKind::ExpiredSignature) => {
                        Err(Status::unauthenticated(TOKEN_EXPIRED))
                    }
                    _ => Err(invalid_credentials()),
                }
            }
        }
    }
}

impl std::fmt::Debug for JwtAuthenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtAuthenticator")
            .field("jwks", &self.shared.jwks_path)
            .field("keys", &self.current_keys().len())
            .field("issuers", &self.shared.settings.issuers)
            .field("audiences", &self.shared.settings.audiences)
            .finish_non_exhaustive()
    }
}

impl JwtAuthenticatorBuilder {
    /// Verifies with the public keys in this JWKS file (`{"keys": [...]}`, RFC 7517), reloaded
    /// when it changes. Keys marked `"use": "enc"` and keys of unsupported types are skipped.
    pub fn jwks_file(mut self, path: impl AsRef<Path>) -> JwtAuthenticatorBuilder {
        self.jwks_path = Some(path.as_ref().to_path_buf());
        self
    }

    /// Verifies HS256 tokens with this shared secret (at least 32 bytes), for tokens whose
    /// `kid` is `kid` (or without `kid`, if it is the only key).
    pub fn hs256_secret(mut self, kid: Option<&str>, secret: &[u8]) -> JwtAuthenticatorBuilder {
        let key = if secret.len() < 32 {
            Err(JwtError::Key {
                kid: kid.map(str::to_owned),
                detail: "HS256 secrets must be at least 32 bytes".to_owned(),
            })
        } else {
            Ok(NamedKey {
                kid: kid.map(str::to_owned),
                algorithm: Algorithm::HS256,
                key: DecodingKey::from_secret(secret),
            })
        };
        self.keys.push(key);
        self
    }

    /// Verifies tokens of algorithm `algorithm` (RS*/PS*, ES256/ES384 or EdDSA) with this PEM
    /// public key.
    pub fn public_key_pem(
        mut self,
        kid: Option<&str>,
        algorithm: Algorithm,
        pem: &[u8],
    ) -> JwtAuthenticatorBuilder {
        use jsonwebtoken::AlgorithmFamily;
        let key = match algorithm.family() {
            AlgorithmFamily::Rsa => DecodingKey::from_rsa_pem(pem),
            AlgorithmFamily::Ec => DecodingKey::from_ec_pem(pem),
            AlgorithmFamily::Ed => DecodingKey::from_ed_pem(pem),
            AlgorithmFamily::Hmac => Err(ErrorKind::InvalidKeyFormat.into()),
        };
        self.keys.push(
            key.map(|key| NamedKey {
                kid: kid.map(str::to_owned),
                algorithm,
                key,
            })
            .map_err(|e| JwtError::Key {
                kid: kid.map(str::to_owned),
                detail: e.to_string(),
            }),
        );
        self
    }

    /// Accepts tokens whose `iss` is this issuer (call again for more); `iss` becomes required.
    pub fn issuer(mut self, issuer: impl Into<String>) -> JwtAuthenticatorBuilder {
        self.issuers.push(issuer.into());
        self
    }

    /// Accepts tokens whose `aud` includes this audience (call again for more); `aud` becomes
    /// required.
    pub fn audience(mut self, audience: impl Into<String>) -> JwtAuthenticatorBuilder {
        self.audiences.push(audience.into());
        self
    }

    /// Clock skew tolerated on `exp` and `nbf` (default 30 s; whole seconds).
    pub fn leeway(mut self, leeway: Duration) -> JwtAuthenticatorBuilder {
        self.leeway = Some(leeway);
        self
    }

    /// Claims to read roles from (default `["roles"]`); strings are split on spaces.
    pub fn roles_claims(mut self, claims: &[&str]) -> JwtAuthenticatorBuilder {
        self.roles_claims = Some(claims.iter().map(|c| (*c).to_owned()).collect());
        self
    }

    /// Claims to read scopes from (default `["scope", "scp"]`); strings are split on spaces.
    pub fn scopes_claims(mut self, claims: &[&str]) -> JwtAuthenticatorBuilder {
        self.scopes_claims = Some(claims.iter().map(|c| (*c).to_owned()).collect());
        self
    }

    /// How often the JWKS file is checked for changes (default 10 s); `None` turns polling off.
    pub fn reload_interval(mut self, interval: Option<Duration>) -> JwtAuthenticatorBuilder {
        self.reload_interval = Some(interval.filter(|d| !d.is_zero()));
        self
    }

    /// Loads the keys. Inside a tokio runtime, also starts polling the JWKS file, until the
    /// authenticator (and every clone) is dropped.
    pub fn build(self) -> Result<JwtAuthenticator, JwtError> {
        let static_keys = self
            .keys
            .into_iter()
            .map(|k| k.map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        let (from_file, fingerprint) = match &self.jwks_path {
            Some(path) => (
                load_jwks(path)?,
                file_watch::fingerprint(std::slice::from_ref(path)).ok(),
            ),
            None => (Vec::new(), None),
        };
        let mut all = from_file;
        all.extend(static_keys.iter().cloned());
        if all.is_empty() {
            return Err(JwtError::NoKeys);
        }
        let shared = Arc::new(Shared {
            settings: Settings {
                issuers: self.issuers,
                audiences: self.audiences,
                leeway: self.leeway.unwrap_or(DEFAULT_LEEWAY),
                roles_claims: self.roles_claims.unwrap_or_else(|| vec!["roles".into()]),
                scopes_claims: self
                    .scopes_claims
                    .unwrap_or_else(|| vec!["scope".into(), "scp".into()]),
            },
            jwks_path: self.jwks_path,
            static_keys,
            keys: RwLock::new(Arc::new(all)),
            jwks_fingerprint: Mutex::new(fingerprint),
            reload_interval: self
                .reload_interval
                .unwrap_or(Some(file_watch::DEFAULT_RELOAD_INTERVAL)),
        });
        if shared.jwks_path.is_some() {
            file_watch::spawn_poller(
                &shared,
                |shared| shared.reload_interval,
                |shared| {
                    JwtAuthenticator {
                        shared: shared.clone(),
                    }
                    .reload_changed()
                },
            );
        }
        Ok(JwtAuthenticator { shared })
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn load_jwks(path: &Path) -> Result<Vec<Arc<NamedKey>>, JwtError> {
    let text = std::fs::read(path).map_err(|source| JwtError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let invalid = |detail: String| JwtError::Jwks {
        path: path.to_path_buf(),
        detail,
    };
    let doc: Value = serde_json::from_slice(&text).map_err(|e| invalid(e.to_string()))?;
    let entries = doc
        .get("keys")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("expected an object with a `keys` array".to_owned()))?;
    let mut keys = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        match jwk_key(entry) {
            Ok(Some(key)) => keys.push(Arc::new(key)),
            Ok(None) => {}
            Err(reason) => tracing::debug!("JWKS {} key #{i} skipped: {reason}", path.display()),
        }
    }
    if keys.is_empty() {
        return Err(invalid("no usable signature verification key".to_owned()));
    }
    Ok(keys)
}

/// One JWK as a verification key; `Ok(None)` for encryption keys.
fn jwk_key(entry: &Value) -> Result<Option<NamedKey>, String> {
    let jwk: Jwk = serde_json::from_value(entry.clone()).map_err(|e| e.to_string())?;
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return Ok(None);
    }
    let algorithm = match jwk.common.key_algorithm {
        Some(alg) => Algorithm::try_from(alg).map_err(|e| e.to_string())?,
        None => match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => Algorithm::RS256,
            AlgorithmParameters::EllipticCurve(p) => match p.curve {
                EllipticCurve::P256 => Algorithm::ES256,
                EllipticCurve::P384 => Algorithm::ES384,
                _ => return Err("unsupported curve".to_owned()),
            },
            AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
                Algorithm::EdDSA
            }
            AlgorithmParameters::OctetKey(_) => Algorithm::HS256,
            _ => return Err("unsupported key type".to_owned()),
        },
    };
    let key = DecodingKey::from_jwk(&jwk).map_err(|e| e.to_string())?;
    if key.family() != algorithm.family() {
        return Err(format!("`alg` {algorithm:?} does not fit the key type"));
    }
    Ok(Some(NamedKey {
        kid: jwk.common.key_id,
        algorithm,
        key,
    }))
}

/// The strings under each claim: arrays of strings, or space-separated strings. A claim name is
/// looked up as is first, then as a dotted path into nested objects.
fn collect_claims(claims: &Value, names: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for name in names {
        let value = claims
            .get(name.as_str())
            .or_else(|| name.split('.').try_fold(claims, |v, part| v.get(part)));
        match value {
            Some(Value::String(s)) => out.extend(s.split_whitespace().map(str::to_owned)),
            Some(Value::Array(items)) => {
                out.extend(items.iter().filter_map(Value::as_str).map(str::to_owned));
            }
            _ => {}
        }
    }
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn claims_from_strings_arrays_and_paths() {
        let claims = json!({
            "scope": "a b",
            "scp": ["c"],
            "realm_access": {"roles": ["admin"]},
            "https://acme.example/roles": "ops"
        });
        let names = |n: &[&str]| n.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            collect_claims(&claims, &names(&["scope", "scp"])),
            ["a", "b", "c"]
        );
        assert_eq!(
            collect_claims(&claims, &names(&["realm_access.roles"])),
            ["admin"]
        );
        assert_eq!(
            collect_claims(&claims, &names(&["https://acme.example/roles"])),
            ["ops"]
        );
        assert!(collect_claims(&claims, &names(&["missing"])).is_empty());
    }

    #[test]
    fn short_secrets_and_no_keys_refused() {
        assert!(matches!(
            JwtAuthenticator::builder()
                .hs256_secret(None, b"short")
                .build(),
            Err(JwtError::Key { .. })
        ));
        assert!(matches!(
            JwtAuthenticator::builder().build(),
            Err(JwtError::NoKeys)
        ));
    }

    #[test]
    fn jwk_type_and_alg_must_agree() {
        let oct_as_rs256 = json!({"kty": "oct", "k": "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTI", "alg": "RS256"});
        assert!(jwk_key(&oct_as_rs256).is_err());
        let enc = json!({"kty": "oct", "k": "c2VjcmV0", "use": "enc"});
        assert!(matches!(jwk_key(&enc), Ok(None)));
        let oct =
            json!({"kty": "oct", "k": "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTI", "kid": "h"});
        let key = jwk_key(&oct).ok().flatten();
        assert_eq!(key.map(|k| k.algorithm), Some(Algorithm::HS256));
    }
}
