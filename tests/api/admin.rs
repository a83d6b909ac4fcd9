//! The admin listener: operational routes only, the public port reduced to the API, and CPU
//! profiling (pprof protobuf and flame graphs) only there and only when enabled.

use pprof::protos::Message;

use crate::helpers::*;

fn with_admin(s: &mut floodgate::Settings) {
    s.server.admin_address = Some("127.0.0.1:0".parse().unwrap());
}

#[tokio::test]
async fn the_public_port_can_serve_only_the_api() {
    let app = spawn_with(|s| {
        with_admin(s);
        s.server.public_operational_routes = false;
    })
    .await;
    for path in ["/health", "/metrics", "/openapi.json", "/docs"] {
        assert_envelope(app.get(path).await, 404, "NOT_FOUND").await;
        let r = app.client.get(app.admin_url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path} on the admin listener");
    }
    assert_eq!(app.compute("fast", 4).await.status(), 200);
}

#[tokio::test]
async fn profiling_is_off_by_default_and_never_public() {
    let app = spawn_with(with_admin).await;
    let r = app
        .client
        .get(app.admin_url("/debug/pprof/profile?seconds=1"))
        .send()
        .await
        .unwrap();
    assert_envelope(r, 404, "NOT_FOUND").await;
    let app = spawn_with(|s| {
        with_admin(s);
        s.server.profiling = true;
    })
    .await;
    assert_envelope(
        app.get("/debug/pprof/profile?seconds=1").await,
        404,
        "NOT_FOUND",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_profiles_come_as_pprof_or_flame_graphs() {
    let app = std::sync::Arc::new(
        spawn_with(|s| {
            with_admin(s);
            s.server.profiling = true;
        })
        .await,
    );
    // Keep the CPU busy with intensive requests while sampling.
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (app, done) = (std::sync::Arc::clone(&app), std::sync::Arc::clone(&done));
        tokio::spawn(async move {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                assert_eq!(app.compute("intensive", 99).await.status(), 200);
            }
        })
    };
    let c = &app.client;
    // Two at once: whichever starts second is refused while the other samples.
    let (first, second) = tokio::join!(
        c.get(app.admin_url("/debug/pprof/profile?seconds=1"))
            .send(),
        c.get(app.admin_url("/debug/pprof/profile?seconds=1"))
            .send(),
    );
    let (first, second) = (first.unwrap(), second.unwrap());
    let (proto, busy) = if first.status() == 503 {
        (second, first)
    } else {
        (first, second)
    };
    assert_eq!(busy.headers()["retry-after"], "1");
    assert_envelope(busy, 503, "PROFILER_BUSY").await;
    assert_eq!(proto.status(), 200);
    assert_eq!(proto.headers()["content-type"], "application/octet-stream");
    let profile = pprof::protos::Profile::decode(proto.bytes().await.unwrap()).unwrap();
    assert!(!profile.sample.is_empty(), "no samples");
    assert!(
        profile.string_table.iter().any(|s| s.contains("floodgate")),
        "no floodgate frames"
    );
    let svg = c
        .get(app.admin_url("/debug/pprof/profile?seconds=1&format=flamegraph"))
        .send()
        .await
        .unwrap();
    assert_eq!(svg.status(), 200);
    assert_eq!(svg.headers()["content-type"], "image/svg+xml");
    let text = svg.text().await.unwrap();
    assert!(text.contains("<svg"), "{}", &text[..text.len().min(200)]);
    assert!(
        text.contains("floodgate"),
        "a flame graph of floodgate's frames"
    );
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    load.await.unwrap();

    let bad = c
        .get(app.admin_url("/debug/pprof/profile?seconds=0"))
        .send()
        .await
        .unwrap();
    assert_envelope(bad, 400, "INVALID_REQUEST").await;
}
