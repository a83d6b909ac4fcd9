//! Authentication of the compute API: API keys, JWTs (HS256, RS256 and ES256 from a JWKS),
//! scopes, per-principal rate limits, and credentials kept out of the logs.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use crate::helpers::*;

const SECRET: &str = "an-hs256-secret-of-at-least-32-bytes!!";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

async fn post(app: &TestApp, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut req = app
        .client
        .post(app.url("/api/v1/compute/fast"))
        .header("content-type", "application/json")
        .body(r#"{"number":7}"#);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap()
}

async fn assert_unauthorized(r: reqwest::Response, challenge: &str) -> Value {
    let www = r.headers()["www-authenticate"].to_str().unwrap().to_owned();
    assert!(www.starts_with("Bearer realm=\"floodgate\""), "{www}");
    assert!(www.contains(challenge), "{www} lacks {challenge}");
    assert_envelope(r, 401, "UNAUTHORIZED").await
}

#[tokio::test]
async fn api_keys_are_accepted_in_either_header_and_compared_by_hash() {
    let keys = TempFile::new(
        "keys",
        &format!(
            "# team keys\nalice:{}\n\n{}  # unnamed\n",
            sha256_hex("alice-key"),
            sha256_hex("bob-key")
        ),
    );
    let app = spawn_with(|s| {
        s.auth.enabled = true;
        s.auth.api_keys_file = Some(keys.0.clone());
        s.auth.api_key_hashes = vec![sha256_hex("env-key")];
    })
    .await;
    for headers in [
        [("x-api-key", "alice-key")],
        [("authorization", "Bearer bob-key")],
        [("authorization", "bearer env-key")],
    ] {
        let r = post(&app, &headers).await;
        assert_eq!(r.status(), 200, "{headers:?}");
        assert_eq!(r.json::<Value>().await.unwrap()["result"], 49);
    }
    let body = assert_unauthorized(post(&app, &[]).await, "realm").await;
    assert!(body["error"]
        .as_str()
        .unwrap()
        .contains("missing credentials"));
    let body = assert_unauthorized(
        post(&app, &[("x-api-key", "not-a-key")]).await,
        "error=\"invalid_token\"",
    )
    .await;
    assert!(!body.to_string().contains("not-a-key"), "{body}");
    // The configured hash itself is not a key.
    assert_unauthorized(
        post(&app, &[("x-api-key", &sha256_hex("alice-key"))]).await,
        "invalid_token",
    )
    .await;
    assert_unauthorized(
        post(&app, &[("authorization", "Basic YWxpY2Uta2V5")]).await,
        "invalid_token",
    )
    .await;
    // Health, readiness and metrics stay open.
    for path in ["/health", "/health/ready", "/metrics", "/openapi.json"] {
        assert_eq!(app.get(path).await.status(), 200, "{path}");
    }
    let text = app.exposition().await;
    assert_eq!(
        sum_series(&text, "http_server_request_duration_seconds_count", |l| l
            .contains("http_response_status_code=\"401\"")),
        4.0
    );
}

#[tokio::test]
async fn hs256_tokens_are_checked_for_signature_time_issuer_audience_and_scope() {
    let secret = TempFile::new("secret", &format!("{SECRET}\n"));
    let app = spawn_with(|s| {
        s.auth.enabled = true;
        s.auth.jwt_hs256_secret_file = Some(secret.0.clone());
        s.auth.jwt_issuer = Some("https://issuer.example".into());
        s.auth.jwt_audience = Some("floodgate".into());
        s.auth.jwt_required_scope = Some("compute".into());
        s.auth.jwt_leeway = std::time::Duration::from_secs(5);
    })
    .await;
    let sign = |claims: Value, secret: &str| {
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    };
    let good = json!({"sub": "svc-a", "iss": "https://issuer.example", "aud": "floodgate",
        "exp": now() + 300, "nbf": now() - 10, "scope": "read compute"});
    let bearer = |t: &str| format!("Bearer {t}");

    let r = post(
        &app,
        &[("authorization", &bearer(&sign(good.clone(), SECRET)))],
    )
    .await;
    assert_eq!(r.status(), 200);

    let cases = [
        ("exp", json!(now() - 60), "expired"),
        ("nbf", json!(now() + 60), "not yet valid"),
        ("iss", json!("https://evil.example"), "wrong issuer"),
        ("aud", json!("someone-else"), "wrong audience"),
    ];
    for (claim, value, reason) in cases {
        let mut claims = good.clone();
        claims[claim] = value;
        let body = assert_unauthorized(
            post(&app, &[("authorization", &bearer(&sign(claims, SECRET)))]).await,
            "invalid_token",
        )
        .await;
        assert!(body["error"].as_str().unwrap().contains(reason), "{body}");
    }
    // Within the leeway is still valid.
    let mut claims = good.clone();
    claims["exp"] = json!(now() - 2);
    let r = post(&app, &[("authorization", &bearer(&sign(claims, SECRET)))]).await;
    assert_eq!(r.status(), 200);
    // Wrong key.
    let forged = sign(good.clone(), "another-secret-of-at-least-32-bytes!!!");
    let body = assert_unauthorized(
        post(&app, &[("authorization", &bearer(&forged))]).await,
        "invalid_token",
    )
    .await;
    assert!(body["error"].as_str().unwrap().contains("bad signature"));
    // Valid token without the scope: 403.
    let mut claims = good.clone();
    claims["scope"] = json!("read");
    let r = post(&app, &[("authorization", &bearer(&sign(claims, SECRET)))]).await;
    assert!(r.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .contains("insufficient_scope"));
    assert_envelope(r, 403, "FORBIDDEN").await;
    // No exp at all is refused.
    let mut claims = good.clone();
    claims.as_object_mut().unwrap().remove("exp");
    assert_unauthorized(
        post(&app, &[("authorization", &bearer(&sign(claims, SECRET)))]).await,
        "invalid_token",
    )
    .await;
}

#[tokio::test]
async fn rs256_and_es256_tokens_are_verified_with_a_jwks() {
    let fixtures = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/api/fixtures");
    let rsa_pem = std::fs::read(fixtures.join("jwt-rs256-test-key.pem")).unwrap();
    let mut jwks: Value =
        serde_json::from_slice(&std::fs::read(fixtures.join("jwt-rs256-test-jwks.json")).unwrap())
            .unwrap();
    // An EC P-256 key made here; its public point goes into the same key set.
    let ec = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let point = ec.public_key_raw();
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    jwks["keys"].as_array_mut().unwrap().push(json!({
        "kty": "EC", "crv": "P-256", "kid": "ec-test", "alg": "ES256", "use": "sig",
        "x": b64(&point[1..33]), "y": b64(&point[33..65]),
    }));
    let file = TempFile::new("jwks.json", &jwks.to_string());
    let app = spawn_with(|s| {
        s.auth.enabled = true;
        s.auth.jwt_jwks_file = Some(file.0.clone());
    })
    .await;
    let claims = json!({"sub": "svc-b", "exp": now() + 300});
    let mut rs = Header::new(Algorithm::RS256);
    rs.kid = Some("rs-test".into());
    let rs_token = encode(&rs, &claims, &EncodingKey::from_rsa_pem(&rsa_pem).unwrap()).unwrap();
    let mut es = Header::new(Algorithm::ES256);
    es.kid = Some("ec-test".into());
    let es_token = encode(
        &es,
        &claims,
        &EncodingKey::from_ec_pem(ec.serialize_pem().as_bytes()).unwrap(),
    )
    .unwrap();
    for token in [&rs_token, &es_token] {
        let r = post(&app, &[("authorization", &format!("Bearer {token}"))]).await;
        assert_eq!(r.status(), 200);
    }
    // A token naming the other key fails its signature check.
    let mut wrong = Header::new(Algorithm::ES256);
    wrong.kid = Some("rs-test".into());
    let t = encode(
        &wrong,
        &claims,
        &EncodingKey::from_ec_pem(ec.serialize_pem().as_bytes()).unwrap(),
    )
    .unwrap();
    assert_unauthorized(
        post(&app, &[("authorization", &format!("Bearer {t}"))]).await,
        "invalid_token",
    )
    .await;
    // HS256 is not accepted when only public keys are configured (algorithm confusion).
    let hs = encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    assert_unauthorized(
        post(&app, &[("authorization", &format!("Bearer {hs}"))]).await,
        "invalid_token",
    )
    .await;
}

#[tokio::test]
async fn per_client_limits_give_each_key_its_own_bucket() {
    let app = spawn_with(|s| {
        s.auth.enabled = true;
        s.auth.api_key_hashes = vec![sha256_hex("key-one"), sha256_hex("key-two")];
        s.rate_limit.per_client = true;
        s.rate_limit.requests_per_second = 1;
        s.rate_limit.burst = 3;
    })
    .await;
    let mut one = Vec::new();
    for _ in 0..5 {
        one.push(
            post(&app, &[("x-api-key", "key-one")])
                .await
                .status()
                .as_u16(),
        );
    }
    assert_eq!(&one[..3], &[200, 200, 200]);
    assert!(one[3..].contains(&429), "{one:?}");
    // Same address, other key: a fresh bucket.
    for _ in 0..3 {
        assert_eq!(post(&app, &[("x-api-key", "key-two")]).await.status(), 200);
    }
}

#[tokio::test]
async fn credentials_never_reach_the_logs() {
    let key = "very-secret-api-key-1234";
    let wrong = "wrong-secret-api-key-5678";
    let app = spawn_binary(&[
        ("ENVIRONMENT", "production"),
        ("LOG_LEVEL", "debug"),
        ("FLOODGATE__AUTH__ENABLED", "true"),
        ("API_KEY_HASHES", &sha256_hex(key)),
    ])
    .await;
    let mut app = app;
    let client = client();
    for (header, value) in [
        ("x-api-key", key),
        ("x-api-key", wrong),
        ("authorization", &format!("Bearer {wrong}")),
        ("authorization", "Bearer aaa.bbb.ccc"),
    ] {
        client
            .post(format!("{}/api/v1/compute/fast", app.base))
            .header("content-type", "application/json")
            .header(header, value)
            .body(r#"{"number":1}"#)
            .send()
            .await
            .unwrap();
    }
    app.child.signal("-TERM");
    let out = app.wait_for_exit().1.join("\n");
    assert!(out.contains("request completed"), "{out}");
    for secret in [key, wrong, "aaa.bbb.ccc"] {
        assert!(
            !out.contains(secret),
            "`{secret}` appears in the log:\n{out}"
        );
    }
}

#[tokio::test]
async fn plaintext_keys_in_configuration_are_refused_without_being_echoed() {
    let out = floodgate_command()
        .env("FLOODGATE__AUTH__ENABLED", "true")
        .env("API_KEY_HASHES", "my-plaintext-key")
        .arg("--print-config")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("auth.api_key_hashes"), "{err}");
    assert!(!err.contains("my-plaintext-key"), "{err}");
}

/// Over gRPC the same tokens are checked by the same code: a valid token without the
/// required scope is PERMISSION_DENIED, none at all UNAUTHENTICATED.
#[tokio::test]
async fn grpc_calls_are_authorized_by_the_same_token_rules() {
    use floodgate::grpc::pb::{compute_service_client::ComputeServiceClient, ComputeRequest};
    let secret = TempFile::new("secret", &format!("{SECRET}\n"));
    let app = spawn_with(|s| {
        s.auth.enabled = true;
        s.auth.jwt_hs256_secret_file = Some(secret.0.clone());
        s.auth.jwt_required_scope = Some("compute".into());
    })
    .await;
    let sign = |scope: &str| {
        let claims = json!({"sub": "svc-g", "exp": now() + 300, "scope": scope});
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap()
    };
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", app.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut c = ComputeServiceClient::new(channel);
    let call = |token: Option<String>| {
        let mut r = tonic::Request::new(ComputeRequest { number: 4 });
        if let Some(t) = token {
            r.metadata_mut()
                .insert("authorization", format!("Bearer {t}").parse().unwrap());
        }
        r
    };
    assert_eq!(
        c.fast(call(Some(sign("read compute"))))
            .await
            .unwrap()
            .into_inner()
            .result,
        16
    );
    let denied = c.fast(call(Some(sign("read")))).await.unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied, "{denied:?}");
    let none = c.fast(call(None)).await.unwrap_err();
    assert_eq!(none.code(), tonic::Code::Unauthenticated);
}

/// Over gRPC too a job is its token subject's: another subject's GetJob, CancelJob and
/// WatchJob are NOT_FOUND as for a job that does not exist, and the same idempotency key makes
/// its own job; a token with the `jobs:admin` scope sees every job, over gRPC and REST.
#[tokio::test]
async fn jobs_belong_to_the_token_subject_and_the_jobs_admin_scope_sees_all() {
    use floodgate::grpc::pb::compute_service_client::ComputeServiceClient;
    use floodgate::grpc::pb::{JobRequest, SubmitJobRequest};
    use tonic::Code;
    let secret = TempFile::new("secret", &format!("{SECRET}\n"));
    let mut settings = test_settings();
    settings.auth.enabled = true;
    settings.auth.jwt_hs256_secret_file = Some(secret.0.clone());
    let app =
        spawn_builder(floodgate::Application::builder(settings).with_kernel(gated_kernel)).await;
    let token = |sub: &str, scope: Value| {
        let claims = json!({"sub": sub, "exp": now() + 300, "scp": scope});
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap()
    };
    let (alice, bob, auditor) = (
        token("alice", json!([])),
        token("bob", json!(["read"])),
        token("auditor", json!(["read", "jobs:admin"])),
    );
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", app.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut c = ComputeServiceClient::new(channel);
    fn call<T>(token: &str, message: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(message);
        r.metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        r
    }
    let gate = Gate::hold();
    let submission = SubmitJobRequest {
        number: gate.number(),
        rounds: None,
        idempotency_key: Some("nightly".into()),
        ..Default::default()
    };
    let hers = c
        .submit_job(call(&alice, submission.clone()))
        .await
        .unwrap()
        .into_inner();
    let id = JobRequest {
        id: hers.id.clone(),
    };
    let not_found = format!("job {} not found", hers.id);
    let refusals = [
        c.get_job(call(&bob, id.clone())).await.unwrap_err(),
        c.cancel_job(call(&bob, id.clone())).await.unwrap_err(),
        c.watch_job(call(&bob, id.clone())).await.unwrap_err(),
    ];
    for status in refusals {
        assert_eq!(status.code(), Code::NotFound, "{status:?}");
        assert_eq!(status.message(), not_found);
    }
    let his = c
        .submit_job(call(&bob, submission.clone()))
        .await
        .unwrap()
        .into_inner();
    assert!(!his.replayed);
    assert_ne!(his.id, hers.id, "Bob's key is his own");
    let again = c
        .submit_job(call(&alice, submission))
        .await
        .unwrap()
        .into_inner();
    assert!(again.replayed);
    assert_eq!(again.id, hers.id);

    let seen = c
        .get_job(call(&auditor, id.clone()))
        .await
        .unwrap()
        .into_inner();
    assert_ne!(
        seen.status,
        floodgate::grpc::pb::JobStatus::Cancelled as i32
    );
    let listed = |token: String| {
        let request = app
            .client
            .get(app.url("/api/v2/jobs"))
            .header("authorization", format!("Bearer {token}"));
        async move {
            let page: Value = request.send().await.unwrap().json().await.unwrap();
            let mut ids: Vec<String> = page["jobs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|j| j["id"].as_str().unwrap().to_owned())
                .collect();
            ids.sort();
            ids
        }
    };
    assert_eq!(listed(bob.clone()).await, [his.id.as_str()]);
    let mut both = vec![hers.id.clone(), his.id.clone()];
    both.sort();
    assert_eq!(listed(auditor.clone()).await, both);
    let cancelled = c.cancel_job(call(&auditor, id)).await.unwrap().into_inner();
    assert_eq!(
        cancelled.status,
        floodgate::grpc::pb::JobStatus::Cancelled as i32
    );
}

/// Admission stands in front of every method an API route serves, HEAD with GET included,
/// and not in front of the router's 405 for a method it does not serve: no credential would
/// make that request servable.
#[tokio::test]
async fn admission_covers_every_method_an_api_route_serves() {
    let app = spawn_with(|s| {
        s.auth.enabled = true;
        s.auth.api_key_hashes = vec![sha256_hex("the-key")];
    })
    .await;
    assert_unauthorized(app.get("/api/v2/jobs").await, "realm").await;
    let jobs = app.url("/api/v2/jobs");
    let r = app.client.head(&jobs).send().await.unwrap();
    assert_eq!(r.status(), 401, "HEAD of a GET route is admitted as GET");
    let r = app
        .client
        .head(&jobs)
        .header("x-api-key", "the-key")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().len(), 0, "HEAD has no body");
    assert_envelope(
        app.get("/api/v1/compute/fast").await,
        405,
        "METHOD_NOT_ALLOWED",
    )
    .await;
}
