//! Who is calling: API keys, configured only as SHA-256 hashes and compared
//! in constant time, and JWTs (HS256 with a shared secret, or RS256/ES256 from a JWKS file).
//!
//! Nothing here logs or returns a credential: failures carry fixed reasons only.

use std::path::Path;
use std::sync::Arc;

use http::HeaderMap;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::Refusal;
use crate::config::{is_sha256_hex, AuthSettings};

/// `X-API-Key`.
pub static X_API_KEY: http::HeaderName = http::HeaderName::from_static("x-api-key");

/// Who a request authenticated as: `key:<name>` or `jwt:<sub>`. Used as the rate-limit key
/// when limits are per client, and as the owner of the jobs it submits.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Principal(pub Arc<str>);

/// The scope that lets a token see and cancel every principal's jobs.
pub const JOBS_ADMIN_SCOPE: &str = "jobs:admin";

/// An authenticated caller, left in the request's extensions by admission. What it may do
/// is kept apart from the principal, so a token's scopes never change its rate-limit bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub principal: Principal,
    /// May see and cancel every principal's jobs: a token with [`JOBS_ADMIN_SCOPE`], or a
    /// principal listed in `auth.admin_principals`.
    pub jobs_admin: bool,
}

struct ApiKey {
    name: Arc<str>,
    hash: [u8; 32],
}

struct JwtKey {
    kid: Option<String>,
    algorithm: Algorithm,
    key: DecodingKey,
}

/// Verifies the credentials a request carries.
pub struct Authenticator {
    keys: Vec<ApiKey>,
    jwt_keys: Vec<JwtKey>,
    validation: Validation,
    required_scope: Option<String>,
    /// `auth.admin_principals`.
    admins: Vec<String>,
}

impl Authenticator {
    /// Read key hashes and JWT keys; `None` when authentication is off. Errors name the file
    /// or setting at fault, never a key.
    pub fn from_settings(s: &AuthSettings) -> Result<Option<Authenticator>, String> {
        if !s.enabled {
            return Ok(None);
        }
        let mut keys = Vec::new();
        for hash in &s.api_key_hashes {
            keys.push(parse_key(None, hash).ok_or("auth.api_key_hashes: not a SHA-256 hash")?);
        }
        if let Some(path) = &s.api_keys_file {
            keys.extend(read_keys_file(path)?);
        }
        let mut jwt_keys = Vec::new();
        if let Some(path) = &s.jwt_hs256_secret_file {
            let secret = read(path)?;
            let secret = secret.trim_end_matches(['\r', '\n']);
            if secret.len() < 32 {
                return Err(format!(
                    "{}: an HS256 secret must be at least 32 bytes",
                    path.display()
                ));
            }
            jwt_keys.push(JwtKey {
                kid: None,
                algorithm: Algorithm::HS256,
                key: DecodingKey::from_secret(secret.as_bytes()),
            });
        }
        if let Some(path) = &s.jwt_jwks_file {
            let set: JwkSet = serde_json::from_str(&read(path)?)
                .map_err(|e| format!("{}: not a JSON Web Key Set: {e}", path.display()))?;
            for jwk in &set.keys {
                let algorithm = match &jwk.algorithm {
                    jsonwebtoken::jwk::AlgorithmParameters::RSA(_) => Algorithm::RS256,
                    jsonwebtoken::jwk::AlgorithmParameters::EllipticCurve(_) => Algorithm::ES256,
                    _ => {
                        return Err(format!(
                            "{}: only RSA (RS256) and EC P-256 (ES256) keys are supported",
                            path.display()
                        ))
                    }
                };
                let key = DecodingKey::from_jwk(jwk)
                    .map_err(|e| format!("{}: unusable key: {e}", path.display()))?;
                jwt_keys.push(JwtKey {
                    kid: jwk.common.key_id.clone(),
                    algorithm,
                    key,
                });
            }
        }
        if keys.is_empty() && jwt_keys.is_empty() {
            return Err("auth.enabled is set but no API key or JWT key was found".into());
        }
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = jwt_keys.iter().map(|k| k.algorithm).collect();
        validation.leeway = s.jwt_leeway.as_secs();
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp"]);
        if let Some(iss) = &s.jwt_issuer {
            validation.set_issuer(&[iss]);
        }
        match &s.jwt_audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        Ok(Some(Authenticator {
            keys,
            jwt_keys,
            validation,
            required_scope: s.jwt_required_scope.clone(),
            admins: s.admin_principals.clone(),
        }))
    }

    /// Who the request's credentials prove it is, or the 401/403 to answer with.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Identity, Refusal> {
        // A repeated header is ambiguous: whichever copy a proxy or this check reads first
        // would decide, and a valid copy would hide an invalid one.
        for name in [&X_API_KEY, &http::header::AUTHORIZATION] {
            if headers.get_all(name).iter().nth(1).is_some() {
                return Err(unauthorized(
                    "send one credential header, not several",
                    true,
                ));
            }
        }
        // The protocol credential stands in for headers a browser's WebSocket cannot set; on
        // any other request the header is no credential.
        let protocol = if is_websocket_upgrade(headers) {
            websocket_credential(headers)?
        } else {
            None
        };
        let key = headers.get(&X_API_KEY);
        let authorization = headers.get(http::header::AUTHORIZATION);
        match (key, authorization, protocol) {
            (Some(key), None, None) => self.verify_key(key.as_bytes()),
            (None, Some(value), None) => self.verify_authorization(value.as_bytes()),
            (None, None, Some(credential)) => self.verify_bearer(&credential),
            (None, None, None) => Err(unauthorized(
                "missing credentials: send `Authorization: Bearer <key or token>` or `X-API-Key`",
                false,
            )),
            // Two credentials are ambiguous (RFC 6750 §2 allows one method per request);
            // accepting the valid one would hide that the other is wrong.
            _ => Err(unauthorized(
                "send one credential: `Authorization`, `X-API-Key` or the WebSocket protocol, not several",
                true,
            )),
        }
    }

    /// `Authorization: Bearer <key or token>`.
    fn verify_authorization(&self, value: &[u8]) -> Result<Identity, Refusal> {
        let credential = match value.split_at_checked(7) {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case(b"bearer ") => rest.trim_ascii(),
            _ => {
                return Err(unauthorized(
                    "unsupported authorization scheme; use Bearer",
                    true,
                ))
            }
        };
        self.verify_bearer(credential)
    }

    /// A bearer credential: a JWT when it looks like one and JWTs are accepted, else a key.
    fn verify_bearer(&self, credential: &[u8]) -> Result<Identity, Refusal> {
        let looks_like_jwt = credential.iter().filter(|&&b| b == b'.').count() == 2;
        if looks_like_jwt && !self.jwt_keys.is_empty() {
            let token = std::str::from_utf8(credential)
                .map_err(|_| unauthorized("invalid token: malformed", true))?;
            self.verify_jwt(token)
        } else {
            self.verify_key(credential)
        }
    }

    fn verify_key(&self, presented: &[u8]) -> Result<Identity, Refusal> {
        if self.keys.is_empty() {
            return Err(unauthorized("API keys are not accepted; send a JWT", true));
        }
        let digest: [u8; 32] = Sha256::digest(presented).into();
        // Compare against every key without stopping early, so timing reveals nothing.
        let mut found = None;
        for key in &self.keys {
            if bool::from(key.hash.ct_eq(&digest)) {
                found = Some(&key.name);
            }
        }
        match found {
            Some(name) => Ok(self.identity(format!("key:{name}"), false)),
            None => Err(unauthorized("invalid API key", true)),
        }
    }

    /// `principal`, a jobs admin when listed in `auth.admin_principals` or `scoped` so.
    fn identity(&self, principal: String, scoped: bool) -> Identity {
        let jobs_admin = scoped || self.admins.contains(&principal);
        Identity {
            principal: Principal(principal.into()),
            jobs_admin,
        }
    }

    fn verify_jwt(&self, token: &str) -> Result<Identity, Refusal> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| unauthorized("invalid token: malformed", true))?;
        let key = self
            .jwt_keys
            .iter()
            .filter(|k| k.algorithm == header.alg)
            .find(|k| header.kid.is_none() || k.kid.is_none() || k.kid == header.kid)
            .ok_or_else(|| unauthorized("invalid token: unknown key or algorithm", true))?;
        let mut validation = self.validation.clone();
        validation.algorithms = vec![key.algorithm];
        let data = jsonwebtoken::decode::<serde_json::Value>(token, &key.key, &validation)
            .map_err(|e| unauthorized(jwt_reason(e.kind()), true))?;
        let claims = data.claims;
        if let Some(scope) = &self.required_scope {
            if !has_scope(&claims, scope) {
                return Err(Refusal::Forbidden(scope.clone()));
            }
        }
        let sub = claims.get("sub").and_then(|v| v.as_str()).unwrap_or("-");
        let scoped = has_scope(&claims, JOBS_ADMIN_SCOPE);
        Ok(self.identity(format!("jwt:{sub}"), scoped))
    }
}

/// The `Sec-WebSocket-Protocol` prefix that carries a credential, for browsers, whose
/// WebSocket API cannot set headers: `floodgate.bearer.<base64url of the key or token>`,
/// offered next to `floodgate.v1`, the protocol the server selects (never the credential).
pub const WEBSOCKET_CREDENTIAL_PREFIX: &str = "floodgate.bearer.";

/// Whether the request asks to become a WebSocket (RFC 6455 §4.1: `Upgrade: websocket` and
/// `Connection: Upgrade`, tokens in any case).
fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    let has_token = |name: http::header::HeaderName, token: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    has_token(http::header::UPGRADE, "websocket") && has_token(http::header::CONNECTION, "upgrade")
}

fn websocket_credential(headers: &HeaderMap) -> Result<Option<Vec<u8>>, Refusal> {
    use base64::Engine;
    let mut offered = headers
        .get_all(http::header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|p| p.trim().strip_prefix(WEBSOCKET_CREDENTIAL_PREFIX));
    let Some(encoded) = offered.next() else {
        return Ok(None);
    };
    if offered.next().is_some() {
        return Err(unauthorized("send one credential, not several", true));
    }
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(encoded.trim_end_matches('='))
        .map(Some)
        .map_err(|_| {
            unauthorized(
                "invalid credential: the WebSocket protocol credential is not base64url",
                true,
            )
        })
}

fn unauthorized(reason: &'static str, invalid: bool) -> Refusal {
    Refusal::Unauthorized { reason, invalid }
}

fn jwt_reason(kind: &ErrorKind) -> &'static str {
    match kind {
        ErrorKind::ExpiredSignature => "invalid token: expired",
        ErrorKind::ImmatureSignature => "invalid token: not yet valid",
        ErrorKind::InvalidIssuer => "invalid token: wrong issuer",
        ErrorKind::InvalidAudience => "invalid token: wrong audience",
        ErrorKind::InvalidSignature => "invalid token: bad signature",
        ErrorKind::MissingRequiredClaim(_) => "invalid token: missing a required claim",
        ErrorKind::InvalidAlgorithm => "invalid token: wrong algorithm",
        _ => "invalid token: malformed",
    }
}

/// `scope` as a space-separated string (RFC 8693) or `scp` as a string or list.
fn has_scope(claims: &serde_json::Value, wanted: &str) -> bool {
    let in_str = |v: &serde_json::Value| {
        v.as_str()
            .is_some_and(|s| s.split_ascii_whitespace().any(|s| s == wanted))
    };
    let in_list = |v: &serde_json::Value| {
        v.as_array()
            .is_some_and(|a| a.iter().any(|s| s.as_str() == Some(wanted)))
    };
    ["scope", "scp"]
        .iter()
        .filter_map(|k| claims.get(*k))
        .any(|v| in_str(v) || in_list(v))
}

fn parse_key(name: Option<&str>, hash: &str) -> Option<ApiKey> {
    let hash = hash.trim();
    if !is_sha256_hex(hash) {
        return None;
    }
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(hash, &mut bytes).ok()?;
    let name = match name {
        Some(n) if !n.trim().is_empty() => n.trim().to_owned(),
        _ => hash[..8].to_ascii_lowercase(),
    };
    Some(ApiKey {
        name: name.into(),
        hash: bytes,
    })
}

fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// One hash per line, optionally `name:hash`; blank lines and `#` comments are skipped.
fn read_keys_file(path: &Path) -> Result<Vec<ApiKey>, String> {
    let text = read(path)?;
    let mut keys = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let (name, hash) = match line.rsplit_once(':') {
            Some((name, hash)) => (Some(name), hash),
            None => (None, line),
        };
        keys.push(parse_key(name, hash).ok_or_else(|| {
            format!(
                "{} line {}: expected a SHA-256 hash (64 hex digits), optionally `name:hash`",
                path.display(),
                n + 1
            )
        })?);
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(hashes: &[&str]) -> AuthSettings {
        AuthSettings {
            enabled: true,
            api_key_hashes: hashes.iter().map(|s| s.to_string()).collect(),
            ..AuthSettings::default()
        }
    }

    fn sha(s: &str) -> String {
        hex::encode(Sha256::digest(s.as_bytes()))
    }

    fn headers(name: &str, value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
        h
    }

    /// A WebSocket upgrade offering `protocol`.
    fn upgrade(protocol: &str) -> HeaderMap {
        let mut h = headers("sec-websocket-protocol", protocol);
        h.insert(http::header::UPGRADE, "websocket".parse().unwrap());
        h.insert(
            http::header::CONNECTION,
            "keep-alive, Upgrade".parse().unwrap(),
        );
        h
    }

    #[test]
    fn a_websocket_protocol_carries_one_base64url_credential() {
        let auth = Authenticator::from_settings(&settings(&[&sha("s3cret")]))
            .unwrap()
            .unwrap();
        // base64url("s3cret") = "czNjcmV0"
        assert!(auth
            .authenticate(&upgrade("floodgate.v1, floodgate.bearer.czNjcmV0"))
            .is_ok());
        for refused in [
            "floodgate.v1, floodgate.bearer.d3Jvbmc",
            "floodgate.v1, floodgate.bearer.not base64!",
            "floodgate.bearer.czNjcmV0, floodgate.bearer.czNjcmV0",
            "floodgate.v1",
        ] {
            assert!(auth.authenticate(&upgrade(refused)).is_err(), "{refused}");
        }
        // Only on an upgrade.
        let plain = headers("sec-websocket-protocol", "floodgate.bearer.czNjcmV0");
        assert!(matches!(
            auth.authenticate(&plain),
            Err(Refusal::Unauthorized { invalid: false, .. })
        ));
        // One credential among the others: with a second, valid or not, refused.
        for (name, value) in [
            ("x-api-key", "s3cret"),
            ("x-api-key", "wrong"),
            ("authorization", "Bearer s3cret"),
        ] {
            let mut both = upgrade("floodgate.v1, floodgate.bearer.czNjcmV0");
            both.insert(http::HeaderName::from_static(name), value.parse().unwrap());
            assert!(
                matches!(
                    auth.authenticate(&both),
                    Err(Refusal::Unauthorized { invalid: true, .. })
                ),
                "{name}: {value}"
            );
        }
    }

    #[test]
    fn api_keys_are_checked_against_their_hashes() {
        let auth = Authenticator::from_settings(&settings(&[&sha("s3cret")]))
            .unwrap()
            .unwrap();
        assert!(auth.authenticate(&headers("x-api-key", "s3cret")).is_ok());
        assert!(auth
            .authenticate(&headers("authorization", "Bearer s3cret"))
            .is_ok());
        assert!(auth
            .authenticate(&headers("authorization", "bearer  s3cret "))
            .is_ok());
        let err = auth
            .authenticate(&headers("x-api-key", "wrong"))
            .unwrap_err();
        assert!(matches!(err, Refusal::Unauthorized { invalid: true, .. }));
        assert!(!crate::error::ApiError::from(err)
            .to_string()
            .contains("wrong"));
        let err = auth
            .authenticate(&headers("authorization", "Basic czNjcmV0"))
            .unwrap_err();
        assert!(matches!(err, Refusal::Unauthorized { .. }));
        assert!(auth.authenticate(&HeaderMap::new()).is_err());
        let mut both = headers("x-api-key", "s3cret");
        both.insert(
            http::header::AUTHORIZATION,
            "Bearer s3cret".parse().unwrap(),
        );
        assert!(
            auth.authenticate(&both).is_err(),
            "one credential per request"
        );
        for name in ["x-api-key", "authorization"] {
            let value = if name == "x-api-key" {
                "s3cret"
            } else {
                "Bearer s3cret"
            };
            for second in [value, "wrong"] {
                let mut twice = headers(name, value);
                twice.append(
                    http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                    second.parse().unwrap(),
                );
                assert!(
                    matches!(auth.authenticate(&twice), Err(Refusal::Unauthorized { .. })),
                    "two {name} headers are refused"
                );
            }
        }
    }

    #[test]
    fn jobs_admins_are_listed_principals_or_tokens_with_the_scope() {
        let dir = std::env::temp_dir().join(format!("floodgate-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (keys, secret_file) = (dir.join("keys"), dir.join("secret"));
        let secret = "a-secret-of-at-least-32-bytes-long!!";
        std::fs::write(&keys, format!("ops:{}\nalice:{}\n", sha("o"), sha("a"))).unwrap();
        std::fs::write(&secret_file, secret).unwrap();
        let auth = Authenticator::from_settings(&AuthSettings {
            enabled: true,
            api_keys_file: Some(keys),
            jwt_hs256_secret_file: Some(secret_file),
            admin_principals: vec!["key:ops".into(), "jwt:auditor".into()],
            ..AuthSettings::default()
        })
        .unwrap()
        .unwrap();
        let identity = |h: HeaderMap| auth.authenticate(&h).unwrap();
        let admin = |h: HeaderMap| identity(h).jobs_admin;
        let token = |claims: serde_json::Value| {
            let token = jsonwebtoken::encode(
                &jsonwebtoken::Header::default(),
                &claims,
                &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
            )
            .unwrap();
            headers("authorization", &format!("Bearer {token}"))
        };
        let exp = jsonwebtoken::get_current_timestamp() + 60;
        assert!(admin(headers("x-api-key", "o")));
        assert!(!admin(headers("x-api-key", "a")));
        assert_eq!(
            identity(headers("x-api-key", "a")).principal,
            Principal("key:alice".into())
        );
        assert!(admin(token(
            serde_json::json!({"sub": "auditor", "exp": exp})
        )));
        assert!(admin(token(
            serde_json::json!({"sub": "bob", "exp": exp, "scope": "read jobs:admin"})
        )));
        assert!(!admin(token(
            serde_json::json!({"sub": "bob", "exp": exp, "scope": "read jobs"})
        )));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn scopes_are_read_from_scope_or_scp() {
        let claims = serde_json::json!({"scope": "read compute"});
        assert!(has_scope(&claims, "compute"));
        assert!(!has_scope(&claims, "comp"));
        assert!(has_scope(
            &serde_json::json!({"scp": ["compute"]}),
            "compute"
        ));
        assert!(!has_scope(&serde_json::json!({}), "compute"));
    }

    #[test]
    fn disabled_means_no_authenticator() {
        assert!(Authenticator::from_settings(&AuthSettings::default())
            .unwrap()
            .is_none());
    }
}
