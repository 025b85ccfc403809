//! Authentication end to end without a transport: JWTs signed with keys generated per test and
//! checked against a JWKS file (and its reload), the attacks the verifier must refuse, and the
//! auth layer with a policy loaded from a file.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ferry::auth::{
    AuthLayer, Authenticator, INVALID_CREDENTIALS, JwtAuthenticator, Policy, Principal,
    TOKEN_EXPIRED,
};
use ferry::{Code, Metadata, Request, Response, Status};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rsa::pkcs1::{EncodeRsaPrivateKey, LineEnding};
use rsa::pkcs8::EncodePublicKey;
use rsa::traits::PublicKeyParts;
use serde_json::{Value, json};
use tower::{Layer, ServiceExt};

type R<T = ()> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

const ISSUER: &str = "https://id.acme.example";
const AUDIENCE: &str = "calculator";
const HS_SECRET: &[u8] = b"an hs256 secret of at least 32 bytes!";

/// Signing keys for each algorithm family, with their JWKs.
struct Keys {
    rsa: EncodingKey,
    rsa_public_pem: String,
    rsa_jwk: Value,
    ec: EncodingKey,
    ec_jwk: Value,
    ed: EncodingKey,
    ed_jwk: Value,
}

/// RSA key generation is slow in debug builds, so each test process makes two keys (the
/// verifier's and an impostor's) and shares them. 1024 bits keep that at about a second; the
/// verifier does not care about the size.
fn rsa_private(which: usize) -> R<rsa::RsaPrivateKey> {
    static KEYS: OnceLock<Vec<rsa::RsaPrivateKey>> = OnceLock::new();
    if let Some(keys) = KEYS.get() {
        return keys.get(which).cloned().ok_or_else(|| "no such key".into());
    }
    let made = (0..2)
        .map(|_| rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 1024))
        .collect::<Result<Vec<_>, _>>()?;
    let keys = KEYS.get_or_init(|| made);
    keys.get(which).cloned().ok_or_else(|| "no such key".into())
}

fn rsa_key(kid: &str, which: usize) -> R<(EncodingKey, String, Value)> {
    let private = rsa_private(which)?;
    let public = private.to_public_key();
    let jwk = json!({
        "kty": "RSA", "kid": kid, "alg": "RS256", "use": "sig",
        "n": B64.encode(public.n().to_bytes_be()),
        "e": B64.encode(public.e().to_bytes_be()),
    });
    let pem = private.to_pkcs1_pem(LineEnding::LF)?;
    Ok((
        EncodingKey::from_rsa_pem(pem.as_bytes())?,
        public.to_public_key_pem(LineEnding::LF)?,
        jwk,
    ))
}

impl Keys {
    fn generate() -> R<Keys> {
        let (rsa, rsa_public_pem, rsa_jwk) = rsa_key("rsa1", 0)?;
        let ec = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        // Uncompressed point: 0x04 || x || y.
        let point = ec.public_key_raw();
        let ec_jwk = json!({
            "kty": "EC", "crv": "P-256", "kid": "ec1",
            "x": B64.encode(&point[1..33]), "y": B64.encode(&point[33..65]),
        });
        let ed = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)?;
        let ed_jwk = json!({"kty": "OKP", "crv": "Ed25519", "kid": "ed1", "x": B64.encode(ed.public_key_raw())});
        Ok(Keys {
            rsa,
            rsa_public_pem,
            rsa_jwk,
            ec: EncodingKey::from_ec_pem(ec.serialize_pem().as_bytes())?,
            ec_jwk,
            ed: EncodingKey::from_ed_pem(ed.serialize_pem().as_bytes())?,
            ed_jwk,
        })
    }

    fn jwks(&self) -> Value {
        json!({"keys": [self.rsa_jwk, self.ec_jwk, self.ed_jwk]})
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn claims() -> Value {
    json!({
        "sub": "ann", "iss": ISSUER, "aud": AUDIENCE,
        "iat": now(), "exp": now() + 300,
        "roles": ["admin"], "scope": "calc:read calc:write",
    })
}

fn with(mut claims: Value, key: &str, value: Value) -> Value {
    claims[key] = value;
    claims
}

fn sign(alg: Algorithm, kid: Option<&str>, claims: &Value, key: &EncodingKey) -> R<String> {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    Ok(jsonwebtoken::encode(&header, claims, key)?)
}

/// A token with a header and signature made by hand.
fn forge(header: &Value, claims: &Value, signature: &str) -> String {
    format!(
        "{}.{}.{signature}",
        B64.encode(header.to_string()),
        B64.encode(claims.to_string())
    )
}

fn bearer(token: &str) -> Metadata {
    let mut md = Metadata::new();
    md.insert("authorization", format!("Bearer {token}"));
    md
}

fn temp_file(name: &str) -> R<PathBuf> {
    let dir = std::env::temp_dir().join(format!("ferry-auth-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir.join(name))
}

fn write_json(path: &Path, value: &Value) -> R {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, value.to_string())?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

fn authenticator(jwks: &Path) -> R<JwtAuthenticator> {
    Ok(JwtAuthenticator::builder()
        .jwks_file(jwks)
        .hs256_secret(Some("hs1"), HS_SECRET)
        .issuer(ISSUER)
        .audience(AUDIENCE)
        .build()?)
}

fn check(jwt: &JwtAuthenticator, token: &str) -> Result<Option<Principal>, Status> {
    jwt.authenticate(&bearer(token), "/calculator.v1.Calculator/Add", None)
}

/// The refusal, which must be UNAUTHENTICATED with one of the two fixed messages.
fn refusal(result: Result<Option<Principal>, Status>) -> String {
    match result {
        Err(status) => {
            assert_eq!(status.code(), Code::Unauthenticated);
            status.message().to_owned()
        }
        Ok(p) => panic!("accepted: {p:?}"),
    }
}

#[tokio::test]
async fn jwt_accepts_valid_tokens_and_refuses_every_attack() -> R {
    let keys = Keys::generate()?;
    let jwks = temp_file("jwks.json")?;
    write_json(&jwks, &keys.jwks())?;
    let jwt = authenticator(&jwks)?;

    // Valid, with each key type.
    for (alg, kid, key) in [
        (Algorithm::RS256, "rsa1", &keys.rsa),
        (Algorithm::ES256, "ec1", &keys.ec),
        (Algorithm::EdDSA, "ed1", &keys.ed),
        (
            Algorithm::HS256,
            "hs1",
            &EncodingKey::from_secret(HS_SECRET),
        ),
    ] {
        let who = check(&jwt, &sign(alg, Some(kid), &claims(), key)?)?.ok_or("no principal")?;
        assert_eq!((who.subject.as_str(), who.kind), ("ann", "jwt"), "{alg:?}");
        assert_eq!(who.roles, ["admin"]);
        assert_eq!(who.scopes, ["calc:read", "calc:write"]);
        assert_eq!(who.claims["iss"], ISSUER);
    }
    let rs = |c: &Value| sign(Algorithm::RS256, Some("rsa1"), c, &keys.rsa);

    // No bearer token: not this authenticator's business.
    assert!(matches!(
        jwt.authenticate(&Metadata::new(), "/a.B/C", None),
        Ok(None)
    ));

    // Expired beyond the leeway; expired within it is still fine.
    let expired = with(claims(), "exp", json!(now() - 120));
    assert_eq!(refusal(check(&jwt, &rs(&expired)?)), TOKEN_EXPIRED);
    let just_expired = with(claims(), "exp", json!(now() - 10));
    assert!(check(&jwt, &rs(&just_expired)?)?.is_some());
    // Not yet valid.
    let early = with(claims(), "nbf", json!(now() + 300));
    assert_eq!(refusal(check(&jwt, &rs(&early)?)), INVALID_CREDENTIALS);
    // Wrong audience, wrong issuer, missing audience, missing exp, missing sub.
    for bad in [
        with(claims(), "aud", json!("billing")),
        with(claims(), "iss", json!("https://evil.example")),
        {
            let mut c = claims();
            c.as_object_mut().map(|o| o.remove("aud"));
            c
        },
        {
            let mut c = claims();
            c.as_object_mut().map(|o| o.remove("exp"));
            c
        },
        {
            let mut c = claims();
            c.as_object_mut().map(|o| o.remove("sub"));
            c
        },
    ] {
        assert_eq!(
            refusal(check(&jwt, &rs(&bad)?)),
            INVALID_CREDENTIALS,
            "{bad}"
        );
    }
    // Wrong signature: another RSA key claiming the same kid.
    let (impostor, _, _) = rsa_key("rsa1", 1)?;
    let forged = sign(Algorithm::RS256, Some("rsa1"), &claims(), &impostor)?;
    assert_eq!(refusal(check(&jwt, &forged)), INVALID_CREDENTIALS);
    // A signature cut from one token and pasted on other claims.
    let genuine = rs(&claims())?;
    let signature = genuine.rsplit('.').next().unwrap_or_default();
    let tampered = forge(
        &json!({"alg": "RS256", "typ": "JWT", "kid": "rsa1"}),
        &with(claims(), "sub", json!("root")),
        signature,
    );
    assert_eq!(refusal(check(&jwt, &tampered)), INVALID_CREDENTIALS);
    // alg: none, with and without a signature.
    for sig in ["", "e30"] {
        let none = forge(
            &json!({"alg": "none", "typ": "JWT", "kid": "rsa1"}),
            &claims(),
            sig,
        );
        assert_eq!(refusal(check(&jwt, &none)), INVALID_CREDENTIALS);
    }
    // Algorithm confusion: HS256 "signed" with the RSA public key as the HMAC secret.
    let public_as_secret = EncodingKey::from_secret(keys.rsa_public_pem.as_bytes());
    let confused = sign(Algorithm::HS256, Some("rsa1"), &claims(), &public_as_secret)?;
    assert_eq!(refusal(check(&jwt, &confused)), INVALID_CREDENTIALS);
    // ... and a verifier with only the RSA key, so no kid is needed to pick it.
    write_json(&jwks, &json!({"keys": [keys.rsa_jwk]}))?;
    let rsa_only = JwtAuthenticator::builder().jwks_file(&jwks).build()?;
    let confused = sign(Algorithm::HS256, None, &claims(), &public_as_secret)?;
    assert_eq!(refusal(check(&rsa_only, &confused)), INVALID_CREDENTIALS);
    assert!(
        check(
            &rsa_only,
            &sign(Algorithm::RS256, None, &claims(), &keys.rsa)?
        )?
        .is_some()
    );
    // Malformed base64, JSON, shape.
    // (An empty `Bearer ` counts as no token: the policy then asks for credentials.)
    assert!(matches!(check(&jwt, ""), Ok(None)));
    for junk in [
        "abc.!!!.def",
        "a.b",
        "Zm9v.YmFy.YmF6",
        &format!("{}.e30.", B64.encode("{\"alg\":")),
    ] {
        assert_eq!(refusal(check(&jwt, junk)), INVALID_CREDENTIALS, "{junk}");
    }
    // Unknown kid; no kid with several keys. The message names no key.
    let unknown = sign(Algorithm::RS256, Some("rsa-2019"), &claims(), &keys.rsa)?;
    let msg = refusal(check(&jwt, &unknown));
    assert_eq!(msg, INVALID_CREDENTIALS);
    assert!(!msg.contains("rsa-2019"));
    let no_kid = sign(Algorithm::RS256, None, &claims(), &keys.rsa)?;
    assert_eq!(refusal(check(&jwt, &no_kid)), INVALID_CREDENTIALS);
    Ok(())
}

#[tokio::test]
async fn jwks_file_is_reloaded_when_it_changes() -> R {
    let keys = Keys::generate()?;
    let jwks = temp_file("reload-jwks.json")?;
    write_json(&jwks, &json!({"keys": [keys.ec_jwk]}))?;
    let jwt = JwtAuthenticator::builder()
        .jwks_file(&jwks)
        .audience(AUDIENCE)
        .reload_interval(Some(Duration::from_millis(50)))
        .build()?;
    let rsa_token = sign(Algorithm::RS256, Some("rsa1"), &claims(), &keys.rsa)?;
    let ec_token = sign(Algorithm::ES256, Some("ec1"), &claims(), &keys.ec)?;
    assert!(check(&jwt, &ec_token)?.is_some());
    assert_eq!(refusal(check(&jwt, &rsa_token)), INVALID_CREDENTIALS);

    // Rotate: the RSA key arrives, the EC key leaves.
    write_json(&jwks, &json!({"keys": [keys.rsa_jwk]}))?;
    let started = Instant::now();
    while check(&jwt, &rsa_token).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "JWKS never reloaded"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(refusal(check(&jwt, &ec_token)), INVALID_CREDENTIALS);

    // A broken file keeps the keys in use.
    std::fs::write(&jwks, b"{ not json")?;
    assert!(jwt.reload().is_err());
    assert!(check(&jwt, &rsa_token)?.is_some());
    std::fs::remove_file(&jwks)?;
    Ok(())
}

const POLICY: &str = r#"
default = "deny"

[[rules]]
method = "/grpc.health.v1.Health/*"
allow_unauthenticated = true

[[rules]]
method = "/calculator.v1.Calculator/*"
scopes = ["calc:read"]

[[rules]]
method = "/calculator.v1.Calculator/Divide"
roles = ["admin"]
"#;

#[tokio::test]
async fn auth_layer_with_jwt_and_a_policy_file() -> R {
    let keys = Keys::generate()?;
    let jwks = temp_file("layer-jwks.json")?;
    write_json(&jwks, &keys.jwks())?;
    let policy_file = temp_file("policy.toml")?;
    std::fs::write(&policy_file, POLICY)?;
    let layer =
        AuthLayer::new(Policy::from_file(&policy_file)?).authenticator(authenticator(&jwks)?);
    let handler = tower::service_fn(|req: Request<&'static str>| async move {
        let who = req
            .extensions()
            .get::<Principal>()
            .map(|p| p.subject.clone());
        Ok::<_, Status>(Response::new(who.unwrap_or_else(|| "anonymous".into())))
    });
    let call = |method: &'static str, token: Option<String>| {
        let svc = layer.layer(handler);
        async move {
            let mut req = Request::new("body");
            req.set_method(method);
            if let Some(token) = token {
                req.metadata_mut()
                    .insert("authorization", format!("Bearer {token}"));
            }
            svc.oneshot(req).await.map(Response::into_inner)
        }
    };
    let reader = with(
        with(claims(), "roles", json!([])),
        "scope",
        json!("calc:read"),
    );
    let reader = sign(Algorithm::ES256, Some("ec1"), &reader, &keys.ec)?;
    let admin = sign(Algorithm::EdDSA, Some("ed1"), &claims(), &keys.ed)?;

    assert_eq!(
        call("/grpc.health.v1.Health/Check", None).await?,
        "anonymous"
    );
    assert_eq!(
        call("/calculator.v1.Calculator/Add", Some(reader.clone())).await?,
        "ann"
    );
    let code = |r: Result<String, Status>| r.err().map(|s| s.code());
    assert_eq!(
        code(call("/calculator.v1.Calculator/Add", None).await),
        Some(Code::Unauthenticated)
    );
    assert_eq!(
        code(call("/calculator.v1.Calculator/Divide", Some(reader)).await),
        Some(Code::PermissionDenied)
    );
    assert_eq!(
        call("/calculator.v1.Calculator/Divide", Some(admin.clone())).await?,
        "ann"
    );
    assert_eq!(
        code(call("/other.v1.Other/Call", Some(admin)).await),
        Some(Code::PermissionDenied)
    );
    let expired = sign(
        Algorithm::EdDSA,
        Some("ed1"),
        &with(claims(), "exp", json!(now() - 600)),
        &keys.ed,
    )?;
    let refused = call("/calculator.v1.Calculator/Add", Some(expired))
        .await
        .err();
    assert_eq!(refused.as_ref().map(Status::message), Some(TOKEN_EXPIRED));
    assert_eq!(
        refused.as_ref().and_then(ferry::auth::www_authenticate),
        Some("Bearer")
    );
    std::fs::remove_file(&jwks)?;
    std::fs::remove_file(&policy_file)?;
    Ok(())
}
